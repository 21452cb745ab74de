"""Mixed-precision maps: per-layer weight/activation bits from a priority-ordered mapping, read and written as YAML.

Priority (lowest first), as torch.ao's QConfigMapping: ``global`` < ``op_type`` (linear, conv, matmul) <
``first_last`` (the model's first and last GEMM, e.g. patch embedding and classifier, whatever their names) <
``regex`` (in file order, later wins) < ``layer`` (exact names). ``abits`` of a layer is the width of its input activations
(for a matmul: of both operands, except a log2 softmax, whose width the method fixes). Layers are the GEMMs of the traced graph named by
module path (``blocks.0.attn.qkv``, ``layers.1.downsample.reduction``) plus the attention products
``blocks.i.attn.matmul_qk`` and ``blocks.i.attn.matmul_av`` (``vitsim layers --model NAME`` lists them).
An unknown layer name, a regex that matches nothing, an unknown key or impossible bits are errors.

Example::

    global: {wbits: 4, abits: 8}
    op_type: {conv: {wbits: 8}}
    regex:
      - {pattern: 'blocks\\.[0-1]\\..*', wbits: 8}
    layer:
      head: {wbits: 8, abits: 8}
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quant.parts import QuantError, check_bits

OP_TYPES = ("linear", "conv", "matmul")
_KEYS = {"wbits", "abits"}


def _bits_entry(entry: Any, where: str) -> dict[str, int]:
    if not isinstance(entry, dict):
        raise QuantError(f"mixed-precision map: {where} must be a mapping with wbits/abits, got {entry!r}")
    unknown = set(entry) - _KEYS - {"pattern"}
    if unknown:
        raise QuantError(f"mixed-precision map: {where} has unknown keys {sorted(unknown)}")
    return {k: check_bits(entry[k], f"mixed-precision map: {where}.{k}", 2, 8) for k in _KEYS if k in entry}


@dataclass
class MixedPrecisionMap:
    """Bits per layer; ``resolve`` applies the priorities to a model's list of layers."""

    global_bits: dict[str, int]
    op_type: dict[str, dict[str, int]] = field(default_factory=dict)
    regex: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    layer: dict[str, dict[str, int]] = field(default_factory=dict)
    first_last: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def uniform(wbits: int, abits: int) -> "MixedPrecisionMap":
        return MixedPrecisionMap({"wbits": check_bits(wbits, "wbits", 2, 8), "abits": check_bits(abits, "abits", 2, 8)})

    @staticmethod
    def from_dict(d: dict[str, Any], defaults: dict[str, int] | None = None) -> "MixedPrecisionMap":
        if not isinstance(d, dict):
            raise QuantError("mixed-precision map: the YAML document must be a mapping")
        unknown = set(d) - {"global", "op_type", "first_last", "regex", "layer"}
        if unknown:
            raise QuantError(f"mixed-precision map: unknown sections {sorted(unknown)} (want global, op_type, regex, layer)")
        base = dict(defaults or {})
        base.update(_bits_entry(d.get("global", {}), "global"))
        if set(base) != _KEYS:
            raise QuantError("mixed-precision map: global must give both wbits and abits (or pass --wbits/--abits)")
        op_type = {}
        for k, v in (d.get("op_type") or {}).items():
            if k not in OP_TYPES:
                raise QuantError(f"mixed-precision map: unknown op_type {k!r}; known: {OP_TYPES}")
            op_type[k] = _bits_entry(v, f"op_type.{k}")
        regex = []
        for i, v in enumerate(d.get("regex") or []):
            if not isinstance(v, dict) or "pattern" not in v:
                raise QuantError(f"mixed-precision map: regex[{i}] needs a 'pattern'")
            try:
                re.compile(v["pattern"])
            except re.error as err:
                raise QuantError(f"mixed-precision map: regex[{i}] pattern {v['pattern']!r}: {err}") from err
            regex.append((v["pattern"], _bits_entry(v, f"regex[{i}]")))
        layer = {k: _bits_entry(v, f"layer.{k}") for k, v in (d.get("layer") or {}).items()}
        first_last = _bits_entry(d["first_last"], "first_last") if d.get("first_last") else {}
        return MixedPrecisionMap(base, op_type, regex, layer, first_last)

    @staticmethod
    def load(path: str | Path, defaults: dict[str, int] | None = None) -> "MixedPrecisionMap":
        path = Path(path)
        if not path.exists():
            raise QuantError(f"mixed-precision map not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise QuantError(f"{path}: not valid YAML: {err}") from err
        try:
            return MixedPrecisionMap.from_dict(data or {}, defaults)
        except QuantError as err:
            raise QuantError(f"{path}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"global": dict(self.global_bits)}
        if self.op_type:
            out["op_type"] = {k: dict(v) for k, v in self.op_type.items()}
        if self.first_last:
            out["first_last"] = dict(self.first_last)
        if self.regex:
            out["regex"] = [{"pattern": p, **b} for p, b in self.regex]
        if self.layer:
            out["layer"] = {k: dict(v) for k, v in self.layer.items()}
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def resolve(self, layers: dict[str, str]) -> dict[str, dict[str, int]]:
        """Bits for each layer of ``layers`` (name -> op type)."""
        unknown = sorted(set(self.layer) - set(layers))
        if unknown:
            raise QuantError(f"mixed-precision map names unknown layers {unknown}; layers are e.g. {list(layers)[:6]}")
        for pattern, _ in self.regex:
            if not any(re.fullmatch(pattern, name) for name in layers):
                raise QuantError(f"mixed-precision map: regex {pattern!r} matches no layer")
        out = {}
        ends = {next(iter(layers)), next(reversed(layers))} if layers else set()
        for name, kind in layers.items():
            bits = dict(self.global_bits)
            bits.update(self.op_type.get(kind, {}))
            if name in ends:
                bits.update(self.first_last)
            for pattern, b in self.regex:
                if re.fullmatch(pattern, name):
                    bits.update(b)
            bits.update(self.layer.get(name, {}))
            out[name] = bits
        return out

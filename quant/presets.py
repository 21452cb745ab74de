"""Quantizer presets named by their spec, e.g. ``Int4WeightPerChannelPoT`` (Brevitas naming), in a registry.

A preset fixes bits, signedness, zero point (``Shifted``: asymmetric, with a zero point), granularity and the scale form
(float, power of two, or log2 codes); a ``quant.quantizer.Quantizer`` built on it picks the scale values.
``preset("Int6ActPerTensorPoT")`` parses any name of the grammar; ``list_presets()`` lists the registered canonical
ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from quant.parts import QuantError, check_bits

_NAME = re.compile(r"^(Shifted)?(U?Int)(\d+)(Weight|Act|Softmax|Residual)(PerTensor|PerChannel|PerHead)?(PoT|Float|Log2)$")


@dataclass(frozen=True)
class QuantSpec:
    """How a tensor is quantized: width, sign, granularity and scale form."""

    bits: int
    signed: bool
    role: str          # Weight | Act | Softmax | Residual
    granularity: str   # PerTensor | PerChannel | PerHead
    scale_form: str    # PoT | Float | Log2
    asymmetric: bool = False  # a zero point moves the code range onto [min, max]

    @property
    def name(self) -> str:
        shifted = "Shifted" if self.asymmetric else ""
        return f"{shifted}{'Int' if self.signed else 'UInt'}{self.bits}{self.role}{self.granularity}{self.scale_form}"

    @property
    def pot(self) -> bool:
        return self.scale_form == "PoT"


_REGISTRY: dict[str, QuantSpec] = {}


def register_preset(spec: QuantSpec) -> QuantSpec:
    _REGISTRY[spec.name] = spec
    return spec


def preset(name: str) -> QuantSpec:
    """The spec named ``name`` (registered, or any name of the grammar)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    m = _NAME.match(name)
    if not m:
        raise QuantError(f"unknown quantizer preset {name!r}; examples: {list_presets()[:6]}")
    shifted, sign, bits, role, gran, form = m.groups()
    hi = 4 if form == "Log2" else 16
    if shifted and (form == "Log2" or role == "Weight"):
        raise QuantError(f"{name}: zero points are for activations with a uniform scale")
    return QuantSpec(check_bits(int(bits), f"{name}: bits", 2, hi), sign == "Int", role, gran or "PerTensor", form,
                     bool(shifted))


def list_presets() -> list[str]:
    return sorted(_REGISTRY)


for _b in range(2, 9):
    for _form in ("PoT", "Float"):
        register_preset(QuantSpec(_b, True, "Weight", "PerChannel", _form))
        register_preset(QuantSpec(_b, True, "Act", "PerTensor", _form))
        register_preset(QuantSpec(_b, True, "Act", "PerHead", _form))
        register_preset(QuantSpec(_b, True, "Act", "PerTensor", _form, asymmetric=True))
        register_preset(QuantSpec(_b, False, "Softmax", "PerTensor", _form))
for _b in range(2, 5):
    register_preset(QuantSpec(_b, False, "Softmax", "PerTensor", "Log2"))
register_preset(QuantSpec(16, True, "Residual", "PerTensor", "PoT"))

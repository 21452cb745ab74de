"""The integer program: the one artefact passed from quant to hwsim and rtl.

An ordered list of ops over named tensors. Shapes are per sample (the batch axis is implicit and leading). Every
tensor records bits, signedness, zero point and its scale: a power-of-two exponent (real = (q - zp) * 2^exp, per tensor
or per channel along ``axis``) or, for methods with float scales, the float as metadata (their requant ops then carry
dyadic multipliers). Everything the executor needs is an integer: constants (weights, biases, shifts, multipliers,
LayerNorm factors) are integer arrays; attributes are integers, booleans or strings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

FORMAT = "vitsim-intprog"
VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: an activation computed by an op, or a constant stored in the program."""

    shape: tuple[int, ...]
    bits: int
    signed: bool = True
    zero_point: int = 0
    exp: int | None = None                       # per-tensor power-of-two scale exponent
    channel_exps: tuple[int, ...] | None = None  # per-channel exponents along ``axis`` (weights, PTF, per-head)
    axis: int = -1
    scale: float | None = None                   # float scale for non-PoT tensors: metadata for reports only
    constant: bool = False

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": list(self.shape), "bits": self.bits, "signed": self.signed,
                               "zero_point": self.zero_point, "axis": self.axis, "constant": self.constant}
        if self.exp is not None:
            out["exp"] = self.exp
        if self.channel_exps is not None:
            out["channel_exps"] = list(self.channel_exps)
        if self.scale is not None:
            out["scale"] = self.scale
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> "TensorSpec":
        return TensorSpec(shape=tuple(int(s) for s in d["shape"]), bits=int(d["bits"]), signed=bool(d["signed"]),
                          zero_point=int(d.get("zero_point", 0)),
                          exp=None if d.get("exp") is None else int(d["exp"]),
                          channel_exps=None if d.get("channel_exps") is None else tuple(int(e) for e in d["channel_exps"]),
                          axis=int(d.get("axis", -1)), scale=d.get("scale"), constant=bool(d.get("constant", False)))


@dataclass(frozen=True)
class Op:
    """One step: ``kind`` names an op registered in hwsim.ops; ``params`` maps roles (weight, shift, ...) to constants."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "params": dict(sorted(self.params.items())), "attrs": dict(sorted(self.attrs.items()))}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Op":
        return Op(kind=d["kind"], name=d["name"], inputs=tuple(d["inputs"]), outputs=tuple(d["outputs"]),
                  params=dict(d.get("params", {})), attrs=dict(d.get("attrs", {})))


@dataclass
class Program:
    """An integer program: tensors, constants and the ordered ops that compute ``outputs`` from ``inputs``."""

    name: str
    inputs: list[str]
    outputs: list[str]
    tensors: dict[str, TensorSpec]
    ops: list[Op]
    constants: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def derived(self, key: str, build: Callable[[], Any]) -> Any:
        """A value computed from the constants once per program and kept (e.g. a GEMM weight packed into panels)."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def spec(self, name: str) -> TensorSpec:
        if name not in self.tensors:
            raise KeyError(f"program {self.name!r}: no tensor named {name!r}")
        return self.tensors[name]

    def op(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(f"program {self.name!r}: no op named {name!r}")

    def param(self, op: Op, role: str) -> np.ndarray | None:
        """The constant bound to ``role`` of ``op``, or None when the op has none."""
        name = op.params.get(role)
        return None if name is None else self.constants[name]

"""Export: the builder quantized modules emit their integer ops into, producing an ``hwsim.ir.Program``.

quant.lower emits every op through this builder, one emitter per op kind, so the op list mirrors the
fake-quant computation step by step. Output shapes are inferred by hwsim's own op checkers, so a program that exports
is already consistent.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hwsim.ir import Op, Program, TensorSpec, validate
from hwsim.ops import OPS
from quant.scales import Scale


def _ints(x: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype.kind == "f":
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError("export: a constant holds non-integer values")
    return arr.astype(np.int64)


def _width(arr: np.ndarray, signed: bool = True) -> int:
    """Smallest of 8/16/32/64 bits that holds ``arr``."""
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    for bits in (8, 16, 32, 64):
        qmin, qmax = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if qmin <= lo and hi <= qmax:
            return bits
    raise ValueError("export: constant exceeds 64 bits")


class ProgramBuilder:
    """Collects tensors, constants and ops; names are unique and every op is shape-checked as it is added. Ops and
    constants that no output depends on (a transpose folded into a MatMul, say) are dropped by ``build``."""

    def _drop_dead(self, live: set[str]) -> None:
        p = self.program
        kept = []
        for op in reversed(p.ops):
            if any(t in live for t in op.outputs):
                kept.append(op)
                live.update(op.inputs)
                live.update(op.params.values())
        p.ops = kept[::-1]
        live.update(p.inputs)
        for name in [t for t in p.tensors if t not in live]:
            del p.tensors[name]
            p.constants.pop(name, None)

    def __init__(self, name: str) -> None:
        self.program = Program(name=name, inputs=[], outputs=[], tensors={}, ops=[], constants={})

    def _scale_fields(self, scale: Scale | None) -> dict[str, Any]:
        if scale is None:
            return {}
        if scale.pot:
            exps = [int(e) for e in scale.exps().reshape(-1)]
            return {"exp": exps[0]} if scale.per_tensor else {"channel_exps": tuple(exps), "axis": scale.axis}
        values = [float(v) for v in scale.value.reshape(-1)]
        return {"scale": values[0]} if scale.per_tensor else {"scale": None, "axis": scale.axis}

    def input(self, name: str, shape: tuple[int, ...], bits: int, signed: bool, scale: Scale) -> str:
        self.program.tensors[name] = TensorSpec(tuple(shape), bits, signed, **self._scale_fields(scale))
        self.program.inputs.append(name)
        return name

    def constant(self, name: str, values: torch.Tensor | np.ndarray, bits: int | None = None, signed: bool = True,
                 scale: Scale | None = None) -> str:
        if name in self.program.tensors:
            raise ValueError(f"export: tensor {name!r} defined twice")
        arr = _ints(values)
        self.program.constants[name] = arr
        self.program.tensors[name] = TensorSpec(tuple(arr.shape), bits or _width(arr, signed), signed, constant=True,
                                                **self._scale_fields(scale))
        return name

    def op(self, kind: str, name: str, inputs: list[str], out: str, bits: int, signed: bool = True,
           scale: Scale | None = None, params: dict[str, str] | None = None, attrs: dict[str, Any] | None = None,
           zero_point: int = 0) -> str:
        """Add op ``name`` computing tensor ``out`` (shape inferred by hwsim's checker).

        ``out`` holds codes with real = (code - zero_point) * scale."""
        if out in self.program.tensors:
            raise ValueError(f"export: tensor {out!r} defined twice")
        op = Op(kind, name, tuple(inputs), (out,), dict(params or {}), dict(attrs or {}))
        # Checkers may read the output's width and sign, so declare it first and set its inferred shape after.
        self.program.tensors[out] = TensorSpec((), bits, signed, zero_point=zero_point, **self._scale_fields(scale))
        try:
            (shape,) = OPS[kind].check(op, self.program, [self.program.tensors[t].shape for t in inputs])
        except ValueError as err:
            del self.program.tensors[out]
            raise ValueError(f"export: op {name!r} ({kind}): {err}") from err
        self.program.tensors[out] = TensorSpec(tuple(shape), bits, signed, zero_point=zero_point,
                                               **self._scale_fields(scale))
        self.program.ops.append(op)
        return out

    def build(self, outputs: list[str], metadata: dict[str, Any]) -> Program:
        self.program.outputs = list(outputs)
        self._drop_dead(set(outputs))
        self.program.metadata = metadata
        validate(self.program)
        return self.program

"""ReduceSum over per-sample axes (mean pooling without the division; hwsim.kernels.reduce)."""
from __future__ import annotations

import numpy as np

from hwsim.ir.schema import Op, Program
from hwsim.kernels.reduce import sum_rows
from hwsim.cost.pricing import price_reduce_sum
from hwsim.ops._registry import need, out_range, register_op
from hwsim.reference import ops as R


def _axes(op: Op) -> list[int]:
    return sorted(int(a) for a in op.attrs["axes"])


def check_reduce_sum(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    (x,) = shapes
    axes = _axes(op)
    need(len(axes) > 0 and len(set(axes)) == len(axes) and all(0 <= a < len(x) for a in axes),
         f"reduce axes {op.attrs['axes']} do not fit shape {x}")
    return [tuple(s for i, s in enumerate(x) if i not in axes)]


def reference_reduce_sum(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    spec = program.tensors[op.outputs[0]]
    total = args[0].sum(axis=tuple(a + 1 for a in _axes(op)), dtype=np.int64)
    return R.saturate(total, spec.bits, spec.signed)[0]


@register_op("ReduceSum", check_reduce_sum, reference_reduce_sum, price_reduce_sum)
def run_reduce_sum(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    axes = [a + 1 for a in _axes(op)]
    keep = [a for a in range(x.ndim) if a not in axes]
    moved = np.ascontiguousarray(np.transpose(x, keep + axes))
    rows = moved.reshape(int(np.prod([x.shape[a] for a in keep])), -1)
    out = np.empty(rows.shape[0], dtype=np.int32)
    lo, hi = out_range(op, program)
    sat = sum_rows(rows, lo, hi, out)
    return [out.reshape(tuple(x.shape[a] for a in keep))], int(sat)

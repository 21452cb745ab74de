"""Registry of integer op kinds: each kind has a shape/attribute checker, a numpy/numba implementation, an
independent int64 reference and a pricing hook for the cost model (hwsim.cost.pricing).

New ops (Swin window ops, BN-folded convs, ...) register here; the executor, the reference executor and program
validation find them by name, with no list of kinds anywhere else. ``check`` receives the per-sample input shapes and
returns the per-sample output shapes, raising ``ValueError`` for inconsistent attributes or constants; ``run`` receives
batched integer arrays and returns the outputs plus the number of saturated values; ``reference`` receives the same
arrays as int64 and returns the first output, computed the obvious way with hwsim.reference.ops (slow by design);
``cost`` prices the op on a hardware configuration (an ``OpCost``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from hwsim.ir.schema import Op, Program

if TYPE_CHECKING:
    from hwsim.cost.pricing import OpCost, PriceContext

CheckFn = Callable[[Op, Program, list[tuple[int, ...]]], list[tuple[int, ...]]]
RunFn = Callable[[Op, Program, list[np.ndarray]], tuple[list[np.ndarray], int]]
ReferenceFn = Callable[[Op, Program, list[np.ndarray]], np.ndarray]
CostFn = Callable[[Op, Program, "PriceContext"], "OpCost"]


@dataclass(frozen=True)
class OpKind:
    name: str
    check: CheckFn
    run: RunFn
    reference: ReferenceFn
    cost: CostFn


OPS: dict[str, OpKind] = {}


def register_op(name: str, check: CheckFn, reference: ReferenceFn, cost: CostFn) -> Callable[[RunFn], RunFn]:
    """Decorator registering ``run`` (with its ``check``, int64 ``reference`` and pricing ``cost``) as op kind ``name``."""

    def wrap(run: RunFn) -> RunFn:
        if name in OPS:
            raise ValueError(f"op kind {name!r} registered twice")
        OPS[name] = OpKind(name, check, run, reference, cost)
        return run

    return wrap


def need(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def param_shape(op: Op, program: Program, role: str, required: bool = True) -> tuple[int, ...] | None:
    name = op.params.get(role)
    if name is None:
        need(not required, f"missing parameter {role!r}")
        return None
    need(name in program.tensors and program.tensors[name].constant, f"parameter {role!r} names {name!r}, which is not a constant")
    return program.tensors[name].shape


def out_range(op: Op, program: Program, index: int = 0) -> tuple[int, int]:
    spec = program.tensors[op.outputs[index]]
    return spec.qmin, spec.qmax


def per_channel_view(values: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """A per-channel vector broadcastable along per-sample ``axis`` of batched ``x`` (a scalar when of length 1)."""
    if values.size == 1:
        return values.reshape(())
    shape = [1] * x.ndim
    shape[axis % (x.ndim - 1) + 1] = -1
    return values.reshape(shape)


def channel_vector(values: np.ndarray | None, n: int) -> np.ndarray:
    """A per-channel int64 parameter as a contiguous vector (length 1 = broadcast)."""
    if values is None:
        return np.zeros(1, dtype=np.int64)
    return np.ascontiguousarray(values, dtype=np.int64).reshape(-1)

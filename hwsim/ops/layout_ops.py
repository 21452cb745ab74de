"""Data-movement ops: Reshape, Permute, Slice, Concat, Roll (per-sample axes; the batch axis is implicit).

Roll is Swin's cyclic shift (Liu et al., ICCV 2021, Sec. 3.2): ``out[..., i, ...] = x[..., (i - shift) mod n, ...]``
along each listed axis, as ``torch.roll``. Roll's reference gathers by the index formula (np.take) rather than calling np.roll.
"""
from __future__ import annotations

import numpy as np

from hwsim.ir.schema import Op, Program
from hwsim.cost.pricing import price_layout
from hwsim.ops._registry import need, register_op


def check_reshape(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    shape = tuple(int(s) for s in op.attrs["shape"])
    need(int(np.prod(shape)) == int(np.prod(shapes[0])), f"cannot reshape {shapes[0]} to {shape}")
    return [shape]


def reference_reshape(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    return args[0].reshape((len(args[0]),) + tuple(op.attrs["shape"]))


@register_op("Reshape", check_reshape, reference_reshape, price_layout)
def run_reshape(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    x = inputs[0]
    return [x.reshape((x.shape[0],) + tuple(op.attrs["shape"]))], 0


def check_permute(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    perm = [int(p) for p in op.attrs["perm"]]
    need(sorted(perm) == list(range(len(shapes[0]))), f"perm {perm} does not fit shape {shapes[0]}")
    return [tuple(shapes[0][p] for p in perm)]


def reference_permute(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    return np.transpose(args[0], [0] + [int(p) + 1 for p in op.attrs["perm"]])


@register_op("Permute", check_permute, reference_permute, price_layout)
def run_permute(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    perm = [0] + [int(p) + 1 for p in op.attrs["perm"]]
    return [np.ascontiguousarray(inputs[0].transpose(perm))], 0


def check_slice(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    axis, start, stop = int(op.attrs["axis"]), int(op.attrs["start"]), int(op.attrs["stop"])
    x = list(shapes[0])
    need(0 <= axis < len(x) and 0 <= start < stop <= x[axis], f"slice {start}:{stop} on axis {axis} of {tuple(x)}")
    x[axis] = stop - start
    return [tuple(x)]


def reference_slice(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    return np.take(args[0], range(int(op.attrs["start"]), int(op.attrs["stop"])), axis=int(op.attrs["axis"]) + 1)


@register_op("Slice", check_slice, reference_slice, price_layout)
def run_slice(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    axis = int(op.attrs["axis"]) + 1
    index = [slice(None)] * inputs[0].ndim
    index[axis] = slice(int(op.attrs["start"]), int(op.attrs["stop"]))
    return [np.ascontiguousarray(inputs[0][tuple(index)])], 0


def check_concat(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    axis = int(op.attrs["axis"])
    first = list(shapes[0])
    for s in shapes[1:]:
        need(len(s) == len(first) and all(a == b for i, (a, b) in enumerate(zip(s, first)) if i != axis),
             f"concat shapes {shapes} differ off axis {axis}")
    first[axis] = sum(s[axis] for s in shapes)
    return [tuple(first)]


def reference_concat(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    batch = max(x.shape[0] for x in args)
    return np.concatenate([np.broadcast_to(x, (batch,) + x.shape[1:]) for x in args], axis=int(op.attrs["axis"]) + 1)


@register_op("Concat", check_concat, reference_concat, price_layout)
def run_concat(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    batch = max(x.shape[0] for x in inputs)
    parts = [np.broadcast_to(x, (batch,) + x.shape[1:]) for x in inputs]
    return [np.concatenate(parts, axis=int(op.attrs["axis"]) + 1)], 0


def check_roll(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    shifts, axes = [int(v) for v in op.attrs["shifts"]], [int(v) for v in op.attrs["axes"]]
    need(len(shifts) == len(axes) > 0, f"roll needs one shift per axis, got shifts {shifts} and axes {axes}")
    need(all(0 <= a < len(shapes[0]) for a in axes), f"roll axes {axes} out of range for shape {shapes[0]}")
    return [shapes[0]]


def reference_roll(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    x = args[0]
    for shift, axis in zip(op.attrs["shifts"], op.attrs["axes"]):
        n = x.shape[int(axis) + 1]
        x = np.take(x, [(i - int(shift)) % n for i in range(n)], axis=int(axis) + 1)
    return x


@register_op("Roll", check_roll, reference_roll, price_layout)
def run_roll(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    axes = tuple(int(a) + 1 for a in op.attrs["axes"])
    return [np.roll(inputs[0], tuple(int(s) for s in op.attrs["shifts"]), axis=axes)], 0

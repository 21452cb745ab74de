"""Requant (shift or dyadic, per tensor or per channel along ``axis``) and the aligned residual Add.

Rounding and saturation as docs/numerics.md pins them (hwsim.kernels.requant). The output tensor's bits and signedness set
the saturation bounds, and its zero point z is added after rounding: y = clamp(round(x * 2^-s) + z). The kernels
clamp to the bounds shifted by -z, and z is added to the clamped codes, which is the same integer.
With ``twin_m = m`` the output is a sign-region twin-uniform code (PTQ4ViT's post-GELU quantizer,
hwsim.kernels.twin): x >= 0 is requantized with the shift s + m, x < 0 with s, no zero point.
"""
from __future__ import annotations

import numpy as np

from hwsim.ir.schema import Op, Program
from hwsim.kernels.requant import add_aligned, requant_dyadic, requant_shift
from hwsim.kernels.twin import TWIN_MAX_M, requant_twin
from hwsim.cost.pricing import price_add, price_requant
from hwsim.ops._registry import channel_vector, need, out_range, param_shape, per_channel_view, register_op
from hwsim.reference import ops as R


def check_requant(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    (x,) = shapes
    mode = op.attrs.get("mode", "shift")
    need(mode in ("shift", "dyadic"), f"requant mode {mode!r}, want 'shift' or 'dyadic'")
    axis = int(op.attrs.get("axis", -1))
    need(-len(x) <= axis < len(x), f"axis {axis} out of range for shape {x}")
    s = param_shape(op, program, "shift")
    need(s in ((1,), (x[axis],)), f"shift shape {s}, want (1,) or ({x[axis]},) along axis {axis}")
    if mode == "dyadic":
        m = param_shape(op, program, "multiplier")
        need(m == s, f"multiplier shape {m} differs from shift shape {s}")
        need(int(program.constants[op.params["shift"]].min()) >= 1, "dyadic shifts must be >= 1")
    twin = int(op.attrs.get("twin_m", 0))
    if twin:
        out = program.tensors[op.outputs[0]]
        need(1 <= twin <= TWIN_MAX_M, f"twin_m {twin} outside 1..{TWIN_MAX_M}")
        need(out.signed and out.zero_point == 0, "twin-uniform codes (twin_m) are signed, without a zero point")
    return [x]


def reference_requant(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    (x,) = args
    out = program.tensors[op.outputs[0]]
    axis = int(op.attrs.get("axis", -1))
    shift = per_channel_view(program.param(op, "shift"), x, axis)
    dyadic = op.attrs.get("mode", "shift") == "dyadic"
    if op.attrs.get("twin_m", 0):
        mult = per_channel_view(program.param(op, "multiplier"), x, axis) if dyadic else None
        return R.requant_twin(x, mult, shift, int(op.attrs["twin_m"]), out.bits)
    if dyadic:
        return R.requant_dyadic(x, per_channel_view(program.param(op, "multiplier"), x, axis), shift, out.bits,
                                out.signed, out.zero_point)
    return R.requant_shift(x, shift, out.bits, out.signed, out.zero_point)


@register_op("Requant", check_requant, reference_requant, price_requant)
def run_requant(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    axis = int(op.attrs.get("axis", -1)) % (x.ndim - 1) + 1  # per-sample axis -> batched axis
    zero = program.tensors[op.outputs[0]].zero_point
    lo, hi = (bound - zero for bound in out_range(op, program))
    out, sat = _requant(op, program, x, axis, lo, hi)
    if zero:
        out += np.int32(zero)
    return [out], sat


def _requant(op: Op, program: Program, x: np.ndarray, axis: int, lo: int, hi: int) -> tuple[np.ndarray, int]:
    if op.attrs.get("twin_m", 0):
        return _requant_twin(op, program, x, axis, lo, hi)
    if op.attrs.get("mode", "shift") == "shift" and axis < x.ndim - 1 and x.size:
        # Per-channel shifts on an inner axis (per head, per conv channel): the [outer * C, inner] view has one shift
        # per row (row r is channel r mod C), so the channel axis is never moved to the end and copied.
        rows = np.ascontiguousarray(x).reshape(-1, int(np.prod(x.shape[axis + 1:])))
        row_shift = np.resize(channel_vector(program.param(op, "shift"), x.shape[axis]), rows.shape[0])
        out = np.empty(rows.shape, dtype=np.int32)
        sat = requant_shift(rows, row_shift, lo, hi, out, True)
        return out.reshape(x.shape), int(sat)
    moved = np.moveaxis(x, axis, -1)
    flat = np.ascontiguousarray(moved).reshape(-1, moved.shape[-1])
    out = np.empty(flat.shape, dtype=np.int32)
    shift = channel_vector(program.param(op, "shift"), flat.shape[1])
    if op.attrs.get("mode", "shift") == "dyadic":
        sat = requant_dyadic(flat, channel_vector(program.param(op, "multiplier"), flat.shape[1]), shift, lo, hi, out)
    else:
        sat = requant_shift(flat, shift, lo, hi, out)
    return np.moveaxis(out.reshape(moved.shape), -1, axis), int(sat)


def _requant_twin(op: Op, program: Program, x: np.ndarray, axis: int, lo: int, hi: int) -> tuple[np.ndarray, int]:
    moved = np.moveaxis(x, axis, -1)
    flat = np.ascontiguousarray(moved).reshape(-1, moved.shape[-1])
    out = np.empty(flat.shape, dtype=np.int32)
    shift = channel_vector(program.param(op, "shift"), flat.shape[1])
    dyadic = op.attrs.get("mode", "shift") == "dyadic"
    mult = channel_vector(program.param(op, "multiplier"), flat.shape[1]) if dyadic else np.ones(1, np.int64)
    sat = requant_twin(flat, mult, shift, int(op.attrs["twin_m"]), dyadic, lo, hi, out)
    return np.moveaxis(out.reshape(moved.shape), -1, axis), int(sat)


def check_add(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    a, b = shapes
    try:
        out = tuple(np.broadcast_shapes(a, b))
    except ValueError:
        out = None
    need(out is not None and out in (a, b), f"Add operands do not broadcast: {a} vs {b}")
    return [out]


def reference_add(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    a, b = np.broadcast_arrays(*args)
    return R.add(a, b, int(op.attrs.get("shift_a", 0)), int(op.attrs.get("shift_b", 0)), program.tensors[op.outputs[0]].bits,
                 bool(op.attrs.get("subtract", False)))


@register_op("Add", check_add, reference_add, price_add)
def run_add(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    a, b = np.broadcast_arrays(*inputs)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    out = np.empty(a.shape, dtype=np.int32)
    lo, hi = out_range(op, program)
    sat = add_aligned(a, b, int(op.attrs.get("shift_a", 0)), int(op.attrs.get("shift_b", 0)), lo, hi, out,
                      -1 if op.attrs.get("subtract", False) else 1)
    return [out], int(sat)

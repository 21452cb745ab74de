"""Element-wise and pooling ops of hybrid models: SiLU, Hardswish, ReLU (hwsim.kernels.activations), AvgPool2d
(hwsim.kernels.pool) and the broadcast Mul (hwsim.kernels.mul). Each kernel's docstring states its formula."""
from __future__ import annotations

import numpy as np

from hwsim.cost.pricing import price_avgpool, price_hardswish, price_mul, price_relu, price_silu
from hwsim.ir.schema import Op, Program
from hwsim.kernels.activations import hardswish_int, relu_int, silu_int
from hwsim.kernels.mul import mul_int
from hwsim.kernels.pool import avgpool_int, reciprocals
from hwsim.ops._registry import need, out_range, register_op
from hwsim.reference import ops as R


def _signed_input(op: Op, program: Program, what: str) -> None:
    spec = program.tensors[op.inputs[0]]
    need(spec.signed and spec.zero_point == 0, f"{what} takes signed codes without a zero point")


def check_silu(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    need(int(op.attrs.get("frac_bits", -1)) >= 0, "SiLU needs frac_bits >= 0")
    need(1 <= int(op.attrs.get("sig_bits", 8)) <= 15, "SiLU sig_bits must be 1..15")
    _signed_input(op, program, "SiLU")
    return [shapes[0]]


def reference_silu(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    out = program.tensors[op.outputs[0]]
    return R.saturate(R.silu(args[0], int(op.attrs["frac_bits"]), int(op.attrs.get("sig_bits", 8))), out.bits,
                      out.signed)[0]


@register_op("SiLU", check_silu, reference_silu, price_silu)
def run_silu(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    out = np.empty(x.shape, dtype=np.int32)
    lo, hi = out_range(op, program)
    sat = silu_int(np.ascontiguousarray(x), int(op.attrs["frac_bits"]), int(op.attrs.get("sig_bits", 8)), lo, hi, out)
    return [out], int(sat)


def check_hardswish(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    need(int(op.attrs.get("frac_bits", -1)) >= 0, "Hardswish needs frac_bits >= 0")
    _signed_input(op, program, "Hardswish")
    return [shapes[0]]


def reference_hardswish(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    out = program.tensors[op.outputs[0]]
    return R.saturate(R.hardswish(args[0], int(op.attrs["frac_bits"])), out.bits, out.signed)[0]


@register_op("Hardswish", check_hardswish, reference_hardswish, price_hardswish)
def run_hardswish(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    out = np.empty(x.shape, dtype=np.int32)
    lo, hi = out_range(op, program)
    return [out], int(hardswish_int(np.ascontiguousarray(x), int(op.attrs["frac_bits"]), lo, hi, out))


def check_relu(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    x, out = program.tensors[op.inputs[0]], program.tensors[op.outputs[0]]
    need((x.bits, x.signed, x.zero_point) == (out.bits, out.signed, out.zero_point),
         "ReLU keeps its input's format (bits, sign, zero point)")
    return [shapes[0]]


def reference_relu(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    return np.maximum(np.asarray(args[0], np.int64), program.tensors[op.inputs[0]].zero_point)


@register_op("ReLU", check_relu, reference_relu, price_relu)
def run_relu(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    out = np.empty(x.shape, dtype=x.dtype if x.dtype in (np.int32, np.int64) else np.int32)
    relu_int(np.ascontiguousarray(x), program.tensors[op.inputs[0]].zero_point, out)
    return [out], 0


def _pool_geometry(op: Op) -> tuple[int, int, int, bool, int]:
    return (int(op.attrs["kernel"]), int(op.attrs.get("stride", 1)), int(op.attrs.get("padding", 0)),
            bool(op.attrs.get("count_include_pad", True)), int(op.attrs.get("frac_bits", 0)))


def check_avgpool(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    (x,) = shapes
    k, stride, pad, _, frac = _pool_geometry(op)
    need(len(x) == 3, f"AvgPool2d takes [C, H, W] per sample, got {x}")
    need(k >= 1 and stride >= 1 and 0 <= pad <= k // 2, f"pool kernel {k}, stride {stride}, padding {pad}: want "
                                                         "kernel, stride >= 1 and padding <= kernel / 2")
    need(0 <= frac <= 16, f"AvgPool2d frac_bits {frac} outside 0..16")
    need(program.tensors[op.inputs[0]].bits + 2 * k.bit_length() + frac + 17 <= 62,
         "AvgPool2d window sums times the reciprocal could overflow int64")
    h, w = (x[1] + 2 * pad - k) // stride + 1, (x[2] + 2 * pad - k) // stride + 1
    need(h > 0 and w > 0, f"pool output would be empty for input {x}")
    return [(x[0], h, w)]


def reference_avgpool(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    k, stride, pad, include, frac = _pool_geometry(op)
    out = program.tensors[op.outputs[0]]
    acc = R.avgpool2d(args[0], k, stride, pad, include, program.tensors[op.inputs[0]].zero_point, frac)
    return R.saturate(acc, out.bits, out.signed)[0]


@register_op("AvgPool2d", check_avgpool, reference_avgpool, price_avgpool)
def run_avgpool(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    k, stride, pad, include, frac = _pool_geometry(op)
    b, c, h, w = x.shape
    out = np.empty((b, c, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1), dtype=np.int64)
    recip = program.derived(f"pool_reciprocals:{k}:{frac}", lambda: reciprocals(k * k, frac))
    avgpool_int(np.ascontiguousarray(x), k, stride, pad, include, program.tensors[op.inputs[0]].zero_point, recip, out)
    lo, hi = out_range(op, program)
    sat = int(((out < lo) | (out > hi)).sum())
    return [np.clip(out, lo, hi).astype(np.int32)], sat


def check_mul(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    a, b = shapes
    try:
        out = tuple(np.broadcast_shapes(a, b))
    except ValueError:
        out = None
    need(out is not None and out == a, f"Mul operands do not broadcast onto the first: {a} vs {b}")
    return [out]


def reference_mul(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    za, zb = (program.tensors[t].zero_point for t in op.inputs)
    out = program.tensors[op.outputs[0]]
    return R.saturate((np.asarray(args[0], np.int64) - za) * (np.asarray(args[1], np.int64) - zb), out.bits,
                      out.signed)[0]


@register_op("Mul", check_mul, reference_mul, price_mul)
def run_mul(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    a, b = np.broadcast_arrays(*inputs)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    za, zb = (program.tensors[t].zero_point for t in op.inputs)
    out = np.empty(a.shape, dtype=np.int32)
    lo, hi = out_range(op, program)
    return [out], int(mul_int(a, b, za, zb, lo, hi, out))

"""Softmax, LayerNorm and GELU ops over the last axis, on the integer kernels of hwsim.kernels."""
from __future__ import annotations

import numpy as np

from hwsim.ir.schema import Op, Program
from hwsim.kernels.gelu import gelu_int
from hwsim.kernels.layernorm import MEAN_FRAC_BITS, layernorm_int
from hwsim.kernels.softmax import LOG2, LOG_SQRT2, LOG_SQRT2_MAX_N, TWIN, UNIFORM, softmax_int
from hwsim.kernels.twin import TWIN_MAX_M
from hwsim.cost.pricing import price_gelu, price_layernorm, price_softmax
from hwsim.ops._registry import need, out_range, param_shape, register_op
from hwsim.reference import ops as R


def _rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def softmax_mode(op: Op) -> int:
    """The output codes of a Softmax op: attrs ``log2`` (log codes) and ``sqrt2`` (their base is sqrt(2), half-octave
    steps; RepQ-ViT's log-sqrt(2) quantizer) or ``twin_m`` (twin-uniform codes, PTQ4ViT)."""
    if op.attrs.get("twin_m", 0):
        return TWIN
    if not op.attrs.get("log2", False):
        return UNIFORM
    return LOG_SQRT2 if op.attrs.get("sqrt2", False) else LOG2


def check_softmax(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    out = program.tensors[op.outputs[0]]
    need(not out.signed, "softmax output must be unsigned")
    need(int(op.attrs.get("frac_bits", -1)) >= 0, "softmax needs frac_bits >= 0 (the logits' fractional bits)")
    need(not op.attrs.get("sqrt2", False) or op.attrs.get("log2", False), "sqrt2 is the base of log codes: needs log2")
    if softmax_mode(op) == LOG_SQRT2:
        need(shapes[0][-1] <= LOG_SQRT2_MAX_N, f"log-sqrt(2) softmax rows take at most {LOG_SQRT2_MAX_N} elements")
    eta = int(op.attrs.get("eta", 0))
    need(eta == 0 or (softmax_mode(op) == LOG2 and 0 < eta < 1 << 16), "eta (SULQ) needs log2 codes and 0 < eta < 2^16")
    twin = int(op.attrs.get("twin_m", 0))
    need(twin == 0 or (not op.attrs.get("log2", False) and 1 <= twin <= TWIN_MAX_M and 2 <= out.bits <= 16),
         f"twin_m (twin-uniform codes) takes 1..{TWIN_MAX_M}, uniform codes of 2..16 bits")
    if op.attrs.get("log2", False):
        need(2 <= out.bits <= 4, f"log softmax output takes 2..4 bits, got {out.bits}")
    else:
        need(1 <= out.bits <= 16, f"uniform softmax output takes 1..16 bits, got {out.bits}")
    return [shapes[0]]


def reference_softmax(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    return R.softmax(args[0], int(op.attrs["frac_bits"]), program.tensors[op.outputs[0]].bits, softmax_mode(op),
                     int(op.attrs.get("eta", 0)), int(op.attrs.get("twin_m", 0)))


@register_op("Softmax", check_softmax, reference_softmax, price_softmax)
def run_softmax(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    out = np.empty(x.shape, dtype=np.int32)
    softmax_int(_rows(x), int(op.attrs["frac_bits"]), program.tensors[op.outputs[0]].bits, softmax_mode(op),
                out.reshape(-1, x.shape[-1]), int(op.attrs.get("eta", 0)), int(op.attrs.get("twin_m", 0)))
    return [out], 0


def check_layernorm(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    (x,) = shapes
    for role in ("gamma", "beta", "shift"):
        s = param_shape(op, program, role)
        need(s == (x[-1],), f"{role} shape {s}, want ({x[-1]},)")
    # sum (2^F x - mu)^2 must stay below 2^62 in int64: |2^F x - mu| < 2^(bits + F), times C rows' worth
    bits = program.tensors[op.inputs[0]].bits
    need(2 * (bits + MEAN_FRAC_BITS) + int(x[-1]).bit_length() <= 62,
         f"LayerNorm input of {bits} bits over {x[-1]} channels could overflow the int64 variance")
    return [x]


def reference_layernorm(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    return R.layernorm(args[0], program.param(op, "gamma"), program.param(op, "beta"), program.param(op, "shift"),
                       program.tensors[op.outputs[0]].bits)


@register_op("LayerNorm", check_layernorm, reference_layernorm, price_layernorm)
def run_layernorm(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    out = np.empty(x.shape, dtype=np.int32)
    lo, hi = out_range(op, program)
    p = {r: np.ascontiguousarray(program.param(op, r), dtype=np.int64) for r in ("gamma", "beta", "shift")}
    sat = layernorm_int(_rows(x), p["gamma"], p["beta"], p["shift"], lo, hi, out.reshape(-1, x.shape[-1]))
    return [out], int(sat)


def check_gelu(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    need(int(op.attrs.get("frac_bits", -1)) >= 0, "GELU needs frac_bits >= 0")
    need(1 <= int(op.attrs.get("sig_bits", 8)) <= 15, "GELU sig_bits must be 1..15")
    return [shapes[0]]


GELU_TABLE_MAX_BITS = 16


def reference_gelu(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    return R.gelu(args[0], int(op.attrs["frac_bits"]), int(op.attrs.get("sig_bits", 8)))


@register_op("GELU", check_gelu, reference_gelu, price_gelu)
def run_gelu(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    frac_bits, sig_bits = int(op.attrs["frac_bits"]), int(op.attrs.get("sig_bits", 8))
    spec = program.tensors[op.inputs[0]]
    if spec.bits <= GELU_TABLE_MAX_BITS and x.size and spec.qmin <= int(x.min()) and int(x.max()) <= spec.qmax:
        # Element-wise on at most 2^16 input codes: tabulate the kernel once per program and look the codes up
        # (the same integers, without one division per element).
        def tabulate() -> np.ndarray:
            codes = np.arange(spec.qmin, spec.qmax + 1, dtype=np.int64)
            table = np.empty(codes.shape, dtype=np.int32)
            gelu_int(codes, frac_bits, sig_bits, table)
            return table

        table = program.derived(f"gelu_table:{op.inputs[0]}:{frac_bits}:{sig_bits}", tabulate)
        return [np.take(table, x - spec.qmin)], 0
    out = np.empty(x.shape, dtype=np.int32)
    gelu_int(np.ascontiguousarray(x), frac_bits, sig_bits, out)
    return [out], 0

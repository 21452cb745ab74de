"""Directed GEMM jobs for the coverage bins real layers miss (rtl.coverage): shifts at their bounds, both output and
accumulator saturations, operands at both extremes in each int4 lane and in int8, an odd K in int4x2 mode, every
PTF shift, every log2 and log-sqrt(2) code, twin-uniform codes and a folded zero point.

Operands are chosen for the bins; the expected accumulators and outputs come from hwsim's kernels (the operand
decode of each array mode, ``gemm`` with the accumulator's saturating bias add, ``requant_shift``), never from a
formula written here. Every job is small (a few rows, 8 columns), so the set adds well under a second of simulation.
"""
from __future__ import annotations

import numpy as np

from hwsim.cost.cycles import MODE_INT4X2, MODE_INT8, MODE_LOG2, MODE_LOG_SQRT2, MODE_TWIN
from hwsim.kernels.gemm import gemm
from hwsim.kernels.requant import requant_shift
from hwsim.kernels.twin import twin_decode
from hwsim.ops.gemm_ops import decode_log2, decode_log_sqrt2
from rtl.layers import SHIFT_RANGE, GemmJob

ACC_MAX, ACC_MIN = (1 << 31) - 1, -(1 << 31)
LOG_CODE_BITS = 4  # the PE's log modes take 4-bit codes


def hwsim_outputs(a: np.ndarray, b: np.ndarray, bias: np.ndarray, shift: np.ndarray, ptf: np.ndarray, mode: int,
                  qmin: int, qmax: int, a_bits: int, twin_m: int = 0, twin_signed: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """hwsim's (accumulator, requantized output) [M, N] of A [M, K] times B [N, K]^T in array ``mode``: the A
    operand decoded as hwsim's ops decode it (PTF shift ``a << ptf``, log codes, twin codes), then its GEMM kernel and
    shift requantizer."""
    a = np.asarray(a, np.int64)
    if mode in (MODE_INT8, MODE_INT4X2):
        lhs = a << np.asarray(ptf, np.int64)
    elif mode == MODE_LOG2:
        lhs = decode_log2(a & 0xF, LOG_CODE_BITS)
    elif mode == MODE_LOG_SQRT2:
        lhs = decode_log_sqrt2(a & 0xF, LOG_CODE_BITS)
    elif mode == MODE_TWIN:
        lhs = np.empty(a.shape, np.int32)
        twin_decode(a, a_bits, twin_m, twin_signed, lhs)
    else:
        raise ValueError(f"unknown array mode {mode}")
    acc, _ = gemm(np.asarray(lhs)[None], np.asarray(b, np.int64)[None], np.asarray(bias, np.int64))
    acc = acc[0].astype(np.int64)
    out = np.empty_like(acc)
    requant_shift(acc, np.asarray(shift, np.int64), qmin, qmax, out)
    return acc, out


def _job(name: str, a, b, bias, shift, ptf, mode: int, a_bits: int, b_bits: int, out_bits: int, **kw) -> GemmJob:
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    bias, shift, ptf = (np.asarray(v, np.int64) for v in (bias, shift, ptf))
    qmin, qmax = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    acc, out = hwsim_outputs(a, b, bias, shift, ptf, mode, qmin, qmax, a_bits, kw.get("twin_m", 0),
                             kw.get("twin_signed", False))
    return GemmJob(f"directed.{name}", a, b, bias, shift, ptf, mode, a_bits, b_bits, qmin, qmax, acc, out, **kw)


def directed_gemm_jobs(seed: int = 0) -> list[GemmJob]:
    """The directed set (deterministic for ``seed``); names start with ``directed.``."""
    rng = np.random.default_rng(seed)
    lo, hi = SHIFT_RANGE
    # per output column: both shift bounds, a left shift, none, right shifts (the first two columns also saturate
    # the accumulator through their bias, the last two clamp the output at both ends)
    shifts = np.array([hi, lo, -1, 0, 3, 9, 0, 0])
    bias = np.array([ACC_MAX - 5, ACC_MIN + 5, 7, -3, 100, -100, 0, 0])
    jobs = []

    # int8: both extremes of A and B, every PTF shift; row 0 (all 127) against column 0's positive weights saturates
    # the accumulator high, row 1 (all -128) against column 1's saturates it low; columns 6 and 7 (shift 0) clamp.
    k = 8
    a = rng.integers(-128, 128, (5, k))
    a[0], a[1], a[2, :2] = 127, -128, (-128, 127)
    b = rng.integers(-128, 128, (8, k))
    b[0], b[1], b[6], b[7] = 127, 127, 127, -128
    b[2, :2] = (-128, 127)
    jobs.append(_job("int8_extremes", a, b, bias, shifts, np.arange(k) % 4, MODE_INT8, 8, 8, 8))

    # int4x2: an odd K (the last PE's high lane empty); each lane's extremes in A and B; PTF shifts in both lanes
    k = 7
    a = rng.integers(-8, 8, (5, k))
    a[0, :4], a[1, :4] = (-8, 7, 7, -8), (7, -8, -8, 7)
    b = rng.integers(-8, 8, (8, k))
    b[0, :4], b[1, :4] = (7, -8, -8, 7), (-8, 7, 7, -8)
    ptf = np.array([1, 2, 3, 0, 2, 1, 3])
    jobs.append(_job("int4x2_lanes", a, b, np.array([5, -5, 0, 0, 40, -40, 1, -1]), np.array([2, 3, 0, 1, 4, 4, 0, 0]),
                     ptf, MODE_INT4X2, 4, 4, 4))

    # log codes: every 4-bit code in each row (rotated), int8 V with both extremes
    k = 16
    codes = (np.arange(k)[None, :] + np.arange(4)[:, None]) % 16
    v = rng.integers(-128, 128, (8, k))
    v[0, 0], v[1, 1] = -128, 127
    for mode, name in ((MODE_LOG2, "log2_codes"), (MODE_LOG_SQRT2, "log_sqrt2_codes")):
        jobs.append(_job(name, codes, v, np.zeros(8), np.array([12, 13, 14, 15, 16, 17, 18, 19]), np.zeros(k),
                         mode, LOG_CODE_BITS, 8, 8))

    # twin-uniform sign codes (post-GELU): negatives on the fine grid, the rest 2^3 coarser
    k = 8
    a = rng.integers(-128, 128, (4, k))
    w = rng.integers(-128, 128, (8, k))
    jobs.append(_job("twin_codes", a, w, np.zeros(8), np.full(8, 10), np.zeros(k), MODE_TWIN, 8, 8, 8,
                     twin_m=3, twin_signed=True))

    # an input zero point z folded into the bias: sum_k (x - z) W = sum_k x W - z sum_k W
    z = -5
    x = rng.integers(-128, 128, (4, k))
    jobs.append(_job("zero_point", x, w, -z * w.sum(1), np.full(8, 7), np.zeros(k), MODE_INT8, 8, 8, 8,
                     a_zero_point=z))
    return jobs

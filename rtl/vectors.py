"""Test vectors for mac_pe and shift_requant with expected values from hwsim's kernels (never re-derived here).

PE: constrained-random int8 / packed-int4 / log2 / log-sqrt(2) vectors with PTF shifts, plus every pair of 4-bit operands in both
int4 lanes, every log code with every int8 operand in both log modes, in groups of four (the harness checks 4-term sums). Requantizer: random accumulators, biases (including
saturating sums), shifts -16..47 and output formats, plus an exhaustive 13-bit x shift sweep.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from hwsim.cost.cycles import MODE_INT4X2, MODE_INT8, MODE_LOG2, MODE_LOG_SQRT2
from hwsim.kernels.gemm import gemm
from hwsim.kernels.requant import add_aligned, requant_shift
from hwsim.ops.gemm_ops import decode_log2, decode_log_sqrt2

OUT_FORMATS = ((4, True), (8, True), (8, False), (16, True))
LOG_CODE_BITS = 4


@dataclass
class PeVectors:
    a: np.ndarray      # int8 operand (modes 2 and 3: the log code in bits 3:0)
    b: np.ndarray
    sh: np.ndarray     # 4-bit PTF shifts (two 2-bit lanes)
    mode: np.ndarray
    expected: np.ndarray  # per group of 4: hwsim's accumulated sum


def _lanes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = ((x & 0xF) ^ 8) - 8
    hi = (((x >> 4) & 0xF) ^ 8) - 8
    return lo, hi


def pe_expected(a: np.ndarray, b: np.ndarray, sh: np.ndarray, mode: np.ndarray) -> np.ndarray:
    """Group-of-4 sums from hwsim's gemm kernel: each vector is a K=2 slice (PTF shift applied to the operand as in
    hwsim's Linear, log codes decoded by hwsim's decode_log2 / decode_log_sqrt2)."""
    a, b, sh, mode = (np.asarray(v, np.int64) for v in (a, b, sh, mode))
    lhs = np.zeros((len(a), 2), np.int64)
    rhs = np.zeros((len(a), 2), np.int64)
    m8, m4, ml, ms = mode == MODE_INT8, mode == MODE_INT4X2, mode == MODE_LOG2, mode == MODE_LOG_SQRT2
    lhs[m8, 0] = a[m8] << (sh[m8] & 3)
    rhs[m8, 0] = b[m8]
    alo, ahi = _lanes(a)
    blo, bhi = _lanes(b)
    lhs[m4, 0], lhs[m4, 1] = alo[m4] << (sh[m4] & 3), ahi[m4] << (sh[m4] >> 2)
    rhs[m4, 0], rhs[m4, 1] = blo[m4], bhi[m4]
    lhs[ml, 0] = decode_log2(a[ml] & 0xF, LOG_CODE_BITS).astype(np.int64)
    rhs[ml, 0] = b[ml]
    lhs[ms, 0] = decode_log_sqrt2(a[ms] & 0xF, LOG_CODE_BITS).astype(np.int64)
    rhs[ms, 0] = b[ms]
    groups = len(a) // 4
    out, _ = gemm(lhs.reshape(groups, 1, 8), rhs.reshape(groups, 1, 8))
    return out.reshape(groups).astype(np.int64)


def pe_vectors(n_random: int, seed: int, exhaustive: bool = True) -> PeVectors:
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, n_random)
    b = rng.integers(-128, 128, n_random)
    sh = rng.integers(0, 16, n_random)
    mode = rng.integers(0, 4, n_random)
    a = np.where((mode == MODE_LOG2) | (mode == MODE_LOG_SQRT2), rng.integers(0, 16, n_random), a)
    parts = [(a, b, sh, mode)]
    if exhaustive:
        nib = np.arange(16)
        pairs = np.array(list(itertools.product(nib, nib)))              # all (a, b) nibble pairs
        lo, hi = np.repeat(pairs, 256, axis=0), np.tile(pairs, (256, 1))   # every lo pair with every hi pair
        a4 = ((hi[:, 0] << 4) | lo[:, 0]).astype(np.int64)
        b4 = ((hi[:, 1] << 4) | lo[:, 1]).astype(np.int64)
        a4, b4 = (a4 ^ 0x80) - 0x80, (b4 ^ 0x80) - 0x80
        parts.append((a4, b4, np.zeros_like(a4), np.full_like(a4, MODE_INT4X2)))
        s4 = np.array(list(itertools.product(np.arange(-8, 8), np.arange(-8, 8))))   # int4 values in int8 mode
        parts.append((s4[:, 0], s4[:, 1], np.zeros(256, np.int64), np.full(256, MODE_INT8)))
        codes = np.array(list(itertools.product(np.arange(16), np.arange(-128, 128))))
        for log_mode in (MODE_LOG2, MODE_LOG_SQRT2):
            parts.append((codes[:, 0], codes[:, 1], np.zeros(len(codes), np.int64), np.full(len(codes), log_mode)))
    a, b, sh, mode = (np.concatenate(p) for p in zip(*parts))
    pad = (-len(a)) % 4
    a, b, sh, mode = (np.concatenate([v, np.zeros(pad, np.int64)]) for v in (a, b, sh, mode))
    return PeVectors(a, b, sh, mode, pe_expected(a, b, sh, mode))


@dataclass
class RequantVectors:
    x: np.ndarray
    bias: np.ndarray
    shift: np.ndarray
    qmin: np.ndarray
    qmax: np.ndarray
    acc: np.ndarray       # hwsim: saturating x + bias
    y: np.ndarray         # hwsim: shift requantization


def requant_expected(x, bias, shift, qmin, qmax, acc_bits: int = 32) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    acc = np.empty(len(x), np.int64)
    add_aligned(np.asarray(x, np.int64), np.asarray(bias, np.int64), 0, 0, lo, hi, acc)
    y = np.empty(len(x), np.int64)
    for q0, q1 in {(int(a), int(b)) for a, b in zip(qmin, qmax)}:
        sel = (qmin == q0) & (qmax == q1)
        out = np.empty((1, int(sel.sum())), np.int64)
        requant_shift(acc[sel][None], np.asarray(shift, np.int64)[sel], q0, q1, out)
        y[sel] = out[0]
    return acc, y


def requant_vectors(n_random: int, seed: int, out_w: int = 16, acc_w: int = 32, exhaustive: bool = True) -> RequantVectors:
    rng = np.random.default_rng(seed + 1)
    top = 1 << (acc_w - 1)
    formats = [(-(1 << (b - 1)), (1 << (b - 1)) - 1) if s else (0, (1 << b) - 1) for b, s in OUT_FORMATS if b + (not s) <= out_w]
    pick = rng.integers(0, len(formats), n_random)
    big = rng.random(n_random) < 0.2
    x = np.where(big, rng.integers(-top, top, n_random), rng.integers(-2**20, 2**20, n_random))
    bias = np.where(rng.random(n_random) < 0.2, rng.integers(-top, top, n_random), rng.integers(-2**12, 2**12, n_random))
    shift = rng.integers(-16, 48, n_random)
    qmin = np.array([formats[i][0] for i in pick])
    qmax = np.array([formats[i][1] for i in pick])
    if exhaustive:
        xs, ss = np.meshgrid(np.arange(-2**12, 2**12), np.arange(-3, 8))
        q0, q1 = formats[min(1, len(formats) - 1)]
        x = np.concatenate([x, xs.ravel()])
        bias = np.concatenate([bias, np.zeros(xs.size, np.int64)])
        shift = np.concatenate([shift, ss.ravel()])
        qmin = np.concatenate([qmin, np.full(xs.size, q0)])
        qmax = np.concatenate([qmax, np.full(xs.size, q1)])
    acc, y = requant_expected(x, bias, shift, qmin, qmax, acc_w)
    return RequantVectors(x, bias, shift, qmin, qmax, acc, y)

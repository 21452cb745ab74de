"""Test vectors for mac_pe and shift_requant with expected values from hwsim's kernels (never re-derived here).

PE: constrained-random int8 / packed-int4 / log2 / log-sqrt(2) vectors with PTF shifts, plus every pair of 4-bit
operands in both int4 lanes, every log code with every int8 operand in both log modes, and every 4- and 8-bit
twin-uniform sign code with every ratio 2^m that fits (the int8 mode's 4-bit product shift, as the engine's edge
decode feeds it), in groups of four (the harness checks 4-term sums). Requantizer: random accumulators, biases
(including saturating sums), shifts -16..47 and output formats, plus an exhaustive 13-bit x shift sweep, plus random
sign-region twin requantizations (hwsim.kernels.twin.requant_twin) for every m.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from hwsim.cost.cycles import MODE_INT4X2, MODE_INT8, MODE_LOG2, MODE_LOG_SQRT2
from hwsim.kernels.gemm import gemm
from hwsim.kernels.requant import add_aligned, requant_shift
from hwsim.kernels.twin import requant_twin, twin_decode
from hwsim.ops.gemm_ops import decode_log2, decode_log_sqrt2

OUT_FORMATS = ((4, True), (8, True), (8, False), (16, True))
LOG_CODE_BITS = 4


@dataclass
class PeVectors:
    a: np.ndarray      # int8 operand (modes 2 and 3: the log code in bits 3:0)
    b: np.ndarray
    sh: np.ndarray     # 4-bit shifts: PTF (two 2-bit lanes in int4x2), or int8 mode's product shift (0..15)
    mode: np.ndarray
    expected: np.ndarray  # per group of 4: hwsim's accumulated sum
    twin: np.ndarray | None = None  # per vector: the twin ratio exponent m of an int8-mode twin vector, else 0


def _lanes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = ((x & 0xF) ^ 8) - 8
    hi = (((x >> 4) & 0xF) ^ 8) - 8
    return lo, hi


def pe_expected(a: np.ndarray, b: np.ndarray, sh: np.ndarray, mode: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """Group-of-4 sums from hwsim's gemm kernel: each vector is a K=2 slice (PTF shift applied to the operand as in
    hwsim's Linear, log codes decoded by hwsim's decode_log2 / decode_log_sqrt2, a twin vector's 8-bit sign code
    ``a`` decoded by hwsim's twin_decode with its m)."""
    a, b, sh, mode, twin = (np.asarray(v, np.int64) for v in (a, b, sh, mode, twin))
    lhs = np.zeros((len(a), 2), np.int64)
    rhs = np.zeros((len(a), 2), np.int64)
    m8, m4, ml, ms = mode == MODE_INT8, mode == MODE_INT4X2, mode == MODE_LOG2, mode == MODE_LOG_SQRT2
    lhs[m8, 0] = a[m8] << sh[m8]
    for m in np.unique(twin[twin > 0]):
        sel = twin == m
        decoded = np.empty(int(sel.sum()), np.int32)
        twin_decode(a[sel], 8, int(m), True, decoded)
        lhs[sel, 0] = decoded
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


def twin_pe_vectors(acc_w: int) -> tuple[np.ndarray, ...]:
    """Every 4- and 8-bit sign code c with every m whose decoded operand fits int16 (hwsim's bound b + m <= 16) and
    whose 4-term sums fit the accumulator, times a spread of int8 operands: (a, b, sh, mode, m) as the engine's west
    edge feeds them (a = c, sh = m for c >= 0, else 0)."""
    parts = []
    bs = np.array([-128, -77, -1, 1, 3, 127])
    for bits in (4, 8):
        codes = np.arange(-(1 << (bits - 1)), 1 << (bits - 1))
        for m in range(1, min(16 - bits, acc_w - 17) + 1):
            c, b = (g.ravel() for g in np.meshgrid(codes, bs))
            parts.append((c, b, np.where(c >= 0, m, 0), np.full(len(c), MODE_INT8), np.full(len(c), m)))
    return tuple(np.concatenate(p) for p in zip(*parts))


def pe_vectors(n_random: int, seed: int, exhaustive: bool = True, acc_w: int = 32) -> PeVectors:
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, n_random)
    b = rng.integers(-128, 128, n_random)
    mode = rng.integers(0, 4, n_random)
    sh = np.where(mode == MODE_INT8, rng.integers(0, 4, n_random), rng.integers(0, 16, n_random))  # int8: PTF 0..3
    a = np.where((mode == MODE_LOG2) | (mode == MODE_LOG_SQRT2), rng.integers(0, 16, n_random), a)
    parts = [(a, b, sh, mode, np.zeros(n_random, np.int64))]
    if exhaustive:
        nib = np.arange(16)
        pairs = np.array(list(itertools.product(nib, nib)))              # all (a, b) nibble pairs
        lo, hi = np.repeat(pairs, 256, axis=0), np.tile(pairs, (256, 1))   # every lo pair with every hi pair
        a4 = ((hi[:, 0] << 4) | lo[:, 0]).astype(np.int64)
        b4 = ((hi[:, 1] << 4) | lo[:, 1]).astype(np.int64)
        a4, b4 = (a4 ^ 0x80) - 0x80, (b4 ^ 0x80) - 0x80
        zeros = lambda n: np.zeros(n, np.int64)  # noqa: E731
        parts.append((a4, b4, zeros(len(a4)), np.full_like(a4, MODE_INT4X2), zeros(len(a4))))
        s4 = np.array(list(itertools.product(np.arange(-8, 8), np.arange(-8, 8))))   # int4 values in int8 mode
        parts.append((s4[:, 0], s4[:, 1], zeros(256), np.full(256, MODE_INT8), zeros(256)))
        codes = np.array(list(itertools.product(np.arange(16), np.arange(-128, 128))))
        for log_mode in (MODE_LOG2, MODE_LOG_SQRT2):
            parts.append((codes[:, 0], codes[:, 1], zeros(len(codes)), np.full(len(codes), log_mode), zeros(len(codes))))
        parts.append(twin_pe_vectors(acc_w))
    a, b, sh, mode, twin = (np.concatenate(p) for p in zip(*parts))
    pad = (-len(a)) % 4
    a, b, sh, mode, twin = (np.concatenate([v, np.zeros(pad, np.int64)]) for v in (a, b, sh, mode, twin))
    return PeVectors(a, b, sh, mode, pe_expected(a, b, sh, mode, twin), twin)


@dataclass
class RequantVectors:
    x: np.ndarray
    bias: np.ndarray
    shift: np.ndarray
    qmin: np.ndarray
    qmax: np.ndarray
    acc: np.ndarray       # hwsim: saturating x + bias
    y: np.ndarray         # hwsim: shift requantization (twin_m > 0: sign-region twin code)
    twin_m: np.ndarray | None = None


def requant_expected(x, bias, shift, qmin, qmax, acc_bits: int = 32, twin_m=None) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    acc = np.empty(len(x), np.int64)
    add_aligned(np.asarray(x, np.int64), np.asarray(bias, np.int64), 0, 0, lo, hi, acc)
    y = np.empty(len(x), np.int64)
    twin_m = np.zeros(len(x), np.int64) if twin_m is None else np.asarray(twin_m, np.int64)
    shift = np.asarray(shift, np.int64)
    for q0, q1, m in {(int(a), int(b), int(t)) for a, b, t in zip(qmin, qmax, twin_m)}:
        sel = (qmin == q0) & (qmax == q1) & (twin_m == m)
        out = np.empty((1, int(sel.sum())), np.int64)
        if m:
            requant_twin(acc[sel][None], np.ones(1, np.int64), shift[sel], m, False, q0, q1, out)
        else:
            requant_shift(acc[sel][None], shift[sel], q0, q1, out)
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
    twin_m = np.zeros(len(x), np.int64)
    if exhaustive:  # twin codes: signed formats, every m, s + m within the shifter's -16..47
        n_twin = max(n_random // 4, 4096)
        signed = [f for f in formats if f[0] < 0]
        pick = rng.integers(0, len(signed), n_twin)
        m = rng.integers(1, 16, n_twin)
        x = np.concatenate([x, rng.integers(-2**20, 2**20, n_twin)])
        bias = np.concatenate([bias, rng.integers(-2**12, 2**12, n_twin)])
        shift = np.concatenate([shift, rng.integers(-16, 48 - m)])
        qmin = np.concatenate([qmin, [signed[i][0] for i in pick]])
        qmax = np.concatenate([qmax, [signed[i][1] for i in pick]])
        twin_m = np.concatenate([twin_m, m])
    acc, y = requant_expected(x, bias, shift, qmin, qmax, acc_w, twin_m)
    return RequantVectors(x, bias, shift, qmin, qmax, acc, y, twin_m)

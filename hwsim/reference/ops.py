"""Reference integer ops (numpy int64, vectorised the obvious way). See each hwsim kernel for the paper and formula."""
from __future__ import annotations

import math

from fractions import Fraction

import numpy as np

I64 = np.int64


def round_shift(x: np.ndarray, s: np.ndarray | int) -> np.ndarray:
    """Round half up of x / 2^s for s > 0 (floor of x / 2^s + 1/2), x * 2^-s for s <= 0."""
    x = np.asarray(x, dtype=I64)
    s = np.broadcast_to(np.asarray(s, dtype=I64), x.shape)
    right = np.floor_divide(x + np.left_shift(I64(1), np.maximum(s - 1, 0)), np.left_shift(I64(1), np.maximum(s, 0)))
    left = x * np.left_shift(I64(1), np.maximum(-s, 0))
    return np.where(s > 0, right, left)


def saturate(x: np.ndarray, bits: int, signed: bool) -> tuple[np.ndarray, int]:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return np.clip(x, lo, hi), int(((x < lo) | (x > hi)).sum())


def requant_shift(x: np.ndarray, shift: np.ndarray, bits: int, signed: bool, zero_point: int = 0) -> np.ndarray:
    return saturate(round_shift(x, shift) + I64(zero_point), bits, signed)[0]


def requant_dyadic(x: np.ndarray, m: np.ndarray, s: np.ndarray, bits: int, signed: bool, zero_point: int = 0) -> np.ndarray:
    x = np.asarray(x, dtype=I64)
    m = np.asarray(m, dtype=I64)
    s = np.asarray(s, dtype=I64)
    v = np.floor_divide(x * m + np.left_shift(I64(1), s - 1), np.left_shift(I64(1), s))
    return saturate(v + I64(zero_point), bits, signed)[0]


def matmul(a: np.ndarray, b_nk: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """sum_k a[..., m, k] * b[..., n, k] (+ bias[n]) in int64, by an explicit einsum."""
    acc = np.einsum("...mk,...nk->...mn", np.asarray(a, I64), np.asarray(b_nk, I64))
    return acc if bias is None else acc + np.asarray(bias, I64)


def _exp_fixed(d: int, f: int, F: int = 15) -> int:
    """2^F * e^(d/2^f) for d <= 0 via I-ViT's shift approximation, in plain Python integers."""
    t = d + d // 2 - d // 16
    u = -t
    q = u // (2**f)
    if q > F:
        return 0
    r = u - q * 2**f
    frac = (r * 2**F) // 2 ** (f + 1)
    return (2**F - frac) // 2**q


def softmax(x: np.ndarray, frac_bits: int, out_bits: int, log2_out: bool) -> np.ndarray:
    out = np.zeros(x.shape, dtype=I64)
    for idx in np.ndindex(x.shape[:-1]):
        row = [int(v) for v in x[idx]]
        m = max(row)
        exps = [_exp_fixed(v - m, frac_bits) for v in row]
        total = sum(exps)
        for j, e in enumerate(exps):
            if log2_out:
                if e == 0:
                    out[idx + (j,)] = 2**out_bits - 1
                    continue
                lg = max(k for k in range(64) if e * 2**k <= total)  # 2^-(lg+1) < e / total <= 2^-lg
                code = lg + (1 if Fraction(total, e * 2**lg) >= Fraction(181, 128) else 0)  # round(log2(total / e)), sqrt(2) ~ 181/128
                out[idx + (j,)] = min(code, 2**out_bits - 1)
            else:
                out[idx + (j,)] = (e * ((2**31 - 1) // total)) // 2 ** (31 - out_bits)
    return out


def gelu(x: np.ndarray, frac_bits: int, sig_bits: int = 8) -> np.ndarray:
    out = np.zeros(x.shape, dtype=I64)
    for idx in np.ndindex(x.shape):
        v = int(x[idx])
        z = v + v // 2 + v // 8 + v // 16
        e = _exp_fixed(-abs(z), frac_bits)
        sp = 2 ** (15 + sig_bits) // (2**15 + e)
        out[idx] = v * (sp if z >= 0 else 2**sig_bits - sp)
    return out


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, shift: np.ndarray, bits: int) -> np.ndarray:
    x = np.asarray(x, I64)
    c = x.shape[-1]
    out = np.zeros(x.shape, dtype=I64)
    for idx in np.ndindex(x.shape[:-1]):
        row = [int(v) for v in x[idx]]
        mu = (2 * sum(row) + c) // (2 * c)
        y = [v - mu for v in row]
        std = max(math.isqrt(sum(v * v for v in y)), 1)
        k = 2**31 // std
        acc = np.array([y[j] * k * int(gamma[j]) + int(beta[j]) for j in range(c)], dtype=I64)
        out[idx] = saturate(round_shift(acc, np.asarray(shift, I64)), bits, True)[0]
    return out


def add(a: np.ndarray, b: np.ndarray, shift_a: int, shift_b: int, bits: int) -> np.ndarray:
    return saturate(round_shift(a, shift_a) + round_shift(b, shift_b), bits, True)[0]


def log2_decode(codes: np.ndarray, code_bits: int) -> np.ndarray:
    """Log2 softmax codes -> integers 2^(2^b - 2 - code), 0 for the zero code (attn @ V as shifts)."""
    codes = np.asarray(codes, I64)
    top = 2**code_bits - 2
    return np.where(codes == top + 1, 0, np.left_shift(I64(1), np.clip(top - codes, 0, None)))


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: int, padding: int) -> np.ndarray:
    """Direct convolution, x [B, C, H, W], w [O, C, kh, kw] -> int64 [B, O, H', W']."""
    x = np.pad(np.asarray(x, I64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    o, c, kh, kw = w.shape
    h_out = (x.shape[2] - kh) // stride + 1
    w_out = (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], o, h_out, w_out), dtype=I64)
    for i in range(h_out):
        for j in range(w_out):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("bchw,ochw->bo", patch, np.asarray(w, I64))
    return out if bias is None else out + np.asarray(bias, I64)[None, :, None, None]

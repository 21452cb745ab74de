"""Shift and dyadic requantization (docs/numerics.md; dyadic form as in I-ViT, Li & Gu, ICCV 2023).

Shift by s > 0:  y = clamp((x + (1 << (s-1))) >> s, qmin, qmax)  -- round half up, arithmetic shift; s <= 0 is x << -s.
Dyadic (m, s):   y = clamp((x * m + (1 << (s-1))) >> s, qmin, qmax) with a 64-bit intermediate, s >= 1.
Per-channel parameters run along the last axis of a 2-D view ``[rows, channels]``; a scalar is a length-1 vector.
Every kernel returns the number of outputs that saturated, so no clamp is silent.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def rshift_round(x: int, s: int) -> int:
    """Round-half-up arithmetic right shift by s (left shift when s <= 0)."""
    if s > 0:
        return (x + (np.int64(1) << (s - 1))) >> s
    return x << (-s)


@njit(cache=True, inline="always")
def clamp(v: int, lo: int, hi: int) -> tuple[int, int]:
    """(v clamped to [lo, hi], 1 if it was clamped else 0): every kernel counts its saturations."""
    if v > hi:
        return hi, 1
    if v < lo:
        return lo, 1
    return v, 0


@njit(cache=True, parallel=True)
def requant_shift(x: np.ndarray, shift: np.ndarray, qmin: int, qmax: int, out: np.ndarray, along_rows: bool = False) -> int:
    """out[r, c] = clamp(rshift_round(x[r, c], shift[c or 0])); returns the saturation count.

    ``along_rows``: one shift per row instead, shift[r]: per-channel shifts on an axis before the last (per head over
    [B, H, T, T] logits viewed as [B * H, T * T]) without moving that axis to the end.
    """
    rows, cols = x.shape
    per_channel = shift.shape[0] > 1
    saturated = 0
    for r in prange(rows):
        for c in range(cols):
            s = shift[r] if along_rows else (shift[c] if per_channel else shift[0])
            v = rshift_round(np.int64(x[r, c]), s)
            v, hit = clamp(v, qmin, qmax)
            saturated += hit
            out[r, c] = v
    return saturated


@njit(cache=True)
def requant_dyadic(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, qmin: int, qmax: int,
                   out: np.ndarray) -> int:
    """out[r, c] = clamp((x * m + 2^(s-1)) >> s) per channel (s >= 1, |m| < 2^31); returns the saturation count."""
    rows, cols = x.shape
    per_channel = shift.shape[0] > 1
    saturated = 0
    for r in range(rows):
        for c in range(cols):
            m = multiplier[c] if per_channel else multiplier[0]
            s = shift[c] if per_channel else shift[0]
            v = (np.int64(x[r, c]) * m + (np.int64(1) << (s - 1))) >> s
            v, hit = clamp(v, qmin, qmax)
            saturated += hit
            out[r, c] = v
    return saturated


@njit(cache=True, parallel=True)
def add_aligned(a: np.ndarray, b: np.ndarray, shift_a: int, shift_b: int, qmin: int, qmax: int,
                out: np.ndarray, sign_b: int = 1) -> int:
    """Residual add with alignment: out = clamp(rshift_round(a, shift_a) + sign_b * rshift_round(b, shift_b));
    ``sign_b`` = -1 subtracts (EfficientFormer's pool(x) - x); returns the saturation count."""
    saturated = 0
    fa = a.ravel()
    fb = b.ravel()
    fo = out.ravel()
    for i in prange(fa.shape[0]):
        v = rshift_round(np.int64(fa[i]), shift_a) + sign_b * rshift_round(np.int64(fb[i]), shift_b)
        v, hit = clamp(v, qmin, qmax)
        saturated += hit
        fo[i] = v
    return saturated

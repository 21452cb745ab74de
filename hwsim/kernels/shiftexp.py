"""Shift-based integer exponential, after I-ViT's Shiftmax / ShiftGELU (Li & Gu, "I-ViT", ICCV 2023).

For an integer d <= 0 holding d / 2^f (f fractional bits), e^(d / 2^f) = 2^(t / 2^f) with t = d * log2(e), and
    t = d + (d >> 1) - (d >> 4)                      (log2 e ~ 1 + 1/2 - 1/16 = 1.4375, floor shifts)
    u = -t;  q = u >> f;  r = u - (q << f)           (integer and fractional part of -t / 2^f, r in [0, 2^f))
    2^(-r / 2^f) ~ 1 - r / 2^(f+1)                   (I-ViT's linear approximation of the fractional power)
    exp = (2^F - floor(r * 2^F / 2^(f+1))) >> q      (value e^(d/2^f) with F fractional bits, F = 15 in I-ViT)
q > F gives 0. The result lies in [0, 2^F].
"""
from __future__ import annotations

import numpy as np
from numba import njit

EXP_FRAC_BITS = 15  # F: fractional bits of the exponential, I-ViT's n = 15


@njit(cache=True, inline="always")
def shr_floor(x: int, s: int) -> int:
    """Floor shift: x >> s for s >= 0, x << -s for s < 0."""
    if s >= 0:
        return x >> s
    return x << (-s)


@njit(cache=True, inline="always")
def exp2_neg(t: int, f: int, F: int) -> int:
    """2^F * 2^(t / 2^f) for t <= 0, with the linear fractional approximation."""
    u = -t
    q = u >> f
    if q > F:
        return 0
    r = u - (q << f)
    mant = (np.int64(1) << F) - shr_floor(r, f + 1 - F)
    return mant >> q


@njit(cache=True, inline="always")
def exp_shift(d: int, f: int, F: int) -> int:
    """2^F * e^(d / 2^f) for d <= 0 (shift-add log2(e), then exp2_neg)."""
    t = d + (d >> 1) - (d >> 4)
    return exp2_neg(t, f, F)

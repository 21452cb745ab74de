"""Twin-uniform codes: PTQ4ViT's two-range quantizer (Yuan et al., ECCV 2022) and MPTQ-ViT's two-region quantizer
with the region ratio 2^m (Tai and Wu, 2024), as integers.

A b-bit twin code stands for an integer at the fine step Delta (its decoded value); the coarse region's step is
Delta 2^m, so the decode is one shift selected by one bit of the code:
- ``flag`` codes (unsigned, post-softmax): bit b-1 is the region flag, bits b-2..0 the magnitude q;
      decoded = q (flag 0)  or  q << m (flag 1);        range [0, (2^(b-1) - 1) 2^m]
- ``sign`` codes (signed, post-GELU): the sign is the region, negative values on the fine step, the rest coarse;
      decoded = c (c < 0)   or  c << m (c >= 0);        range [-2^(b-1), (2^(b-1) - 1) 2^m]
A decoded operand needs b + m signed bits; the PE takes the code and shifts its product by m (or 0), the shifter that
also applies FQ-ViT's power-of-two factors (rtl/src/gemm_engine.v: the decode at the array's west edge).

Encoding a ``sign`` code from an accumulator x is a requantization with two shifts (``requant_twin``):
      c = max(round(x M 2^-s), -2^(b-1))           for x < 0   (fine: Delta = 2^s / M in accumulator units)
      c = min(round(x M 2^-(s+m)), 2^(b-1) - 1)    for x >= 0  (coarse)
with M = 1 and s <= 0 allowed in shift mode (rounding as hwsim.kernels.requant). The ``flag`` codes of a softmax come
from the integer softmax's uniform path (hwsim.kernels.softmax, mode TWIN).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from hwsim.kernels.requant import clamp, rshift_round

TWIN_MAX_M = 15   # the PE's product shifter takes 4 bits


@njit(cache=True, inline="always")
def twin_value(code: int, bits: int, m: int, signed: bool) -> int:
    """The decoded integer of one twin code (module docstring)."""
    if signed:
        return code if code < 0 else code << m
    half = 1 << (bits - 1)
    return (code - half) << m if code >= half else code


@njit(cache=True, parallel=True)
def twin_decode(codes: np.ndarray, bits: int, m: int, signed: bool, out: np.ndarray) -> None:
    """Decode a flat array of b-bit twin codes into ``out`` (int16 or wider)."""
    flat, dst = codes.ravel(), out.ravel()
    for i in prange(flat.shape[0]):
        dst[i] = twin_value(np.int64(flat[i]), bits, m, signed)


@njit(cache=True)
def requant_twin(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, m: int, dyadic: bool, qmin: int, qmax: int,
                 out: np.ndarray) -> int:
    """Sign-region twin requantization of ``x`` [rows, cols] (per-channel parameters along the last axis, or one);
    returns the saturation count (codes clamped at either end)."""
    rows, cols = x.shape
    per_channel = shift.shape[0] > 1
    saturated = 0
    for r in range(rows):
        for c in range(cols):
            s = shift[c] if per_channel else shift[0]
            v = np.int64(x[r, c])
            coarse = v >= 0
            if dyadic:
                mult = multiplier[c] if per_channel else multiplier[0]
                v = rshift_round(v * mult, s + m if coarse else s)
            else:
                v = rshift_round(v, s + m if coarse else s)
            v, hit = clamp(v, 0 if coarse else qmin, qmax if coarse else 0)
            saturated += hit
            out[r, c] = v
    return saturated

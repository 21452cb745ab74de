"""Integer GELU in the manner of I-ViT's ShiftGELU (Li & Gu, ICCV 2023): GELU(x) ~ x * sigmoid(1.702 x).

For an integer x with f fractional bits (scale 2^-f):
    z = x + (x >> 1) + (x >> 3) + (x >> 4)              (1.702 ~ 1.6875, shift-add)
    E = exp_shift(-|z|, f, F=15)                        (2^15 * e^-|z|, hwsim.kernels.shiftexp)
    sp = floor(2^(F+P) / (2^F + E))                     (2^P * sigmoid(|z|), one integer division, as I-ViT's)
    sig = sp if z >= 0 else 2^P - sp                    (sigmoid(-z) = 1 - sigmoid(z))
    out = x * sig                                       (scale 2^-(f+P); P = 8 sigmoid bits by default)
Using sigmoid's symmetry instead of I-ViT's row-max keeps the op element-wise.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from hwsim.kernels.shiftexp import EXP_FRAC_BITS, exp_shift

SIGMOID_BITS = 8


@njit(cache=True, inline="always")
def times_sigmoid(v: int, z: int, frac_bits: int, sig_bits: int) -> int:
    """v * 2^P sigmoid(z) for z with ``frac_bits`` fractional bits (the steps of the module docstring after z)."""
    F = EXP_FRAC_BITS
    a = z if z < 0 else -z
    e = exp_shift(a, frac_bits, F)
    sp = (np.int64(1) << (F + sig_bits)) // ((np.int64(1) << F) + e)
    sig = sp if z >= 0 else (np.int64(1) << sig_bits) - sp
    return v * sig


@njit(cache=True, parallel=True)
def gelu_int(x: np.ndarray, frac_bits: int, sig_bits: int, out: np.ndarray) -> None:
    """Element-wise integer GELU of ``x`` into ``out`` (same shape); see the module docstring."""
    fx = x.ravel()
    fo = out.ravel()
    for i in prange(fx.shape[0]):
        v = np.int64(fx[i])
        fo[i] = times_sigmoid(v, v + (v >> 1) + (v >> 3) + (v >> 4), frac_bits, sig_bits)

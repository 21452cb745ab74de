"""Integer softmax: I-ViT Shiftmax exponent (Li & Gu, ICCV 2023) with a uniform or a log2 output.

Row-wise over the last axis of ``x`` (integer logits with f fractional bits):
    E_j = exp_shift(x_j - max(x), f, F=15)            (hwsim.kernels.shiftexp), S = sum_j E_j
  uniform, b bits (I-ViT):   out_j = (E_j * floor((2^31 - 1) / S)) >> (31 - b)      -> unsigned, value out_j * 2^-b
  log2, b bits (FQ-ViT LIS, Lin et al., IJCAI 2022; P^2-ViT's softmax output): p_j = E_j / S goes to the nearest
  power of two in the linear domain,
        l = floor(log2 floor(S / E_j))   (so 2^-(l+1) < p_j <= 2^-l);   code = l + [4 E_j 2^l < 3 S]   (p_j < 0.75 * 2^-l)
        code = min(code, 2^b - 1); E_j = 0 -> code 2^b - 1.  Value 2^-code, except code 2^b - 1 which means 0.
  Nearest in the linear domain (not FQ-ViT's rounding of log2 itself) because attn @ V is linear in p: it halves the
  error of the large probabilities that dominate each row (measured on deit_fmnist p2vit W8A8: 0.66 -> 0.35 pt drop).
The log2 codes let attn @ V run as shifts: sum_j V_j << (2^b - 2 - code_j), scale 2^(e_V - (2^b - 2)).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from hwsim.kernels.shiftexp import EXP_FRAC_BITS, exp_shift

SOFTMAX_NORM_BITS = 31


@njit(cache=True, inline="always")
def floor_log2(v: int) -> int:
    """floor(log2 v) for v >= 1."""
    n = -1
    while v > 0:
        v >>= 1
        n += 1
    return n


@njit(cache=True, inline="always")
def log2_code(e: int, total: int, zero_code: int) -> int:
    """Code of p = e / total: the nearest power of two 2^-code in the linear domain; zero_code for e = 0 or tiny p."""
    if e == 0:
        return zero_code
    lg = floor_log2(total // e)  # 2^-(lg+1) < p <= 2^-lg
    code = lg + 1 if 4 * (e << lg) < 3 * total else lg  # p < 0.75 * 2^-lg: 2^-(lg+1) is nearer
    return min(code, zero_code)


@njit(cache=True, parallel=True)
def softmax_int(x: np.ndarray, frac_bits: int, out_bits: int, log2_out: bool, out: np.ndarray) -> None:
    """Integer softmax over the last axis of a 2-D int array into ``out`` (see module docstring)."""
    rows, n = x.shape
    zero_code = (1 << out_bits) - 1
    for r in prange(rows):
        exps = np.empty(n, dtype=np.int64)
        m = x[r, 0]
        for j in range(1, n):
            if x[r, j] > m:
                m = x[r, j]
        total = np.int64(0)
        for j in range(n):
            e = exp_shift(np.int64(x[r, j]) - m, frac_bits, EXP_FRAC_BITS)
            exps[j] = e
            total += e
        if log2_out:
            for j in range(n):
                out[r, j] = log2_code(exps[j], total, zero_code)
        else:
            factor = ((np.int64(1) << SOFTMAX_NORM_BITS) - 1) // total
            for j in range(n):
                out[r, j] = (exps[j] * factor) >> (SOFTMAX_NORM_BITS - out_bits)

"""Integer softmax: I-ViT Shiftmax exponent (Li & Gu, ICCV 2023) with a uniform, a log2 or a log-sqrt(2) output.

Row-wise over the last axis of ``x`` (integer logits with f fractional bits):
    E_j = exp_shift(x_j - max(x), f, F=15)            (hwsim.kernels.shiftexp), S = sum_j E_j
  uniform, b bits (I-ViT's normalisation, rounded to nearest):
        out_j = min((E_j * floor((2^31 - 1) / S) + 2^(30 - b)) >> (31 - b), 2^b - 1)  -> unsigned, value out_j * 2^-b
  I-ViT floors instead; on rows of 197 random logits (N(0, 1), 8 fractional bits) the floored 8-bit row sums to 0.64
  on average and rounding to nearest gives 0.97 (mean absolute error per probability 0.0018 -> 0.0011).
  log2, b bits (FQ-ViT LIS, Lin et al., IJCAI 2022; P^2-ViT's softmax output): code = round(log2(S / E_j)), the
  rounding done in the log domain with sqrt(2) as the fixed-point constant 181/128 (no square root, no divider):
        l = floor(log2 floor(S / E_j))   (so 2^l <= S / E_j < 2^(l+1));   code = l + [128 S >= 181 E_j 2^l]
        code = min(code, 2^b - 1); E_j = 0 -> code 2^b - 1.  Value 2^-code, except code 2^b - 1 which means 0.
  The rounding matters: flooring S / E_j first and testing its half bit sent every p in (0.5, 1] to 1 and cost
  deit_fmnist p2vit W8A8 0.66 pt; log-domain rounding 0.17 pt, linear-domain nearest 0.35 pt (10 000 test images).
The log2 codes let attn @ V run as shifts: sum_j V_j << (2^b - 2 - code_j), scale 2^(e_V - (2^b - 2)).
  log-sqrt(2), b bits (RepQ-ViT's post-softmax quantizer, Li et al., ICCV 2023): code = round(log_sqrt2(S / E_j)),
  half-octave steps, value 2^(-code / 2). Since log_sqrt2(S / E) = log2(S^2 / E^2), the code is the log2 code of the
  squares, rounded in the log domain with the same fixed-point sqrt(2) = 181/128:
        code = log2_code(E_j^2, S^2)        (E_j < 2^16 and S < 2^27, i.e. rows of at most 4096: squares < 2^54)
  The decode multiplies V by 2^(T - ceil(code / 2)) times 128 (even code) or 181 (odd code), T = 2^(b-1) - 1, scale
  2^-(T + 7) (hwsim.ops.gemm_ops.decode_log_sqrt2): a shift and, for odd codes, a shift-add by 181 = 10110101b.
  SULQ, b bits (I&S-ViT's shift-uniform-log2 quantizer, Zhong et al., 2023, with integer exponents): the log2 code
  of p + eta, eta = eta_num / 2^12 (ETA_FRAC_BITS), i.e. code = log2_code(E_j + round(eta S), S); the value is
  2^-code - eta (the top code: -eta), and attn @ V subtracts eta * sum_j V_j (hwsim.ops.gemm_ops).
  twin uniform, b bits, ratio 2^m (PTQ4ViT's twin-uniform softmax quantizer, Yuan et al., ECCV 2022; MPTQ-ViT's
  two-region one): the uniform path's P_j = E_j * floor((2^31 - 1) / S) ~ p 2^31 rounded at two steps,
        q1 = (P_j + 2^(30 - f)) >> (31 - f),  f = b - 1 + m        (fine step 2^-f)
        q2 = min((P_j + 2^(30 - g)) >> (31 - g), 2^(b-1) - 1),  g = b - 1   (coarse step 2^-g)
        code = q1 if q1 < 2^(b-1) else 2^(b-1) + q2      (bit b-1 flags the coarse region; hwsim.kernels.twin)
  so the decoded integer is q1 or q2 << m at scale 2^-f.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from hwsim.kernels.shiftexp import EXP_FRAC_BITS, exp_shift

SOFTMAX_NORM_BITS = 31
UNIFORM, LOG2, LOG_SQRT2, TWIN = 0, 1, 2, 3   # output codes of softmax_int
LOG_SQRT2_MAX_N = 4096               # row length bound of the log-sqrt(2) squares (int64)
ETA_FRAC_BITS = 12                   # SULQ's shift eta as a fixed-point fraction eta_num / 2^12


@njit(cache=True, inline="always")
def bit_length(v: int) -> int:
    """Bits of 0 <= v < 2^63 by a six-step binary search (a leading-zero count): no loop over bits, no divide."""
    n = 0
    for step in (32, 16, 8, 4, 2, 1):
        if v >> step:
            v >>= step
            n += step
    return n + (1 if v else 0)


@njit(cache=True, inline="always")
def log2_code(e: int, total: int, zero_code: int) -> int:
    """Code of p = e / total: round(log2(1 / p)) with sqrt(2) ~ 181/128; zero_code for e = 0 or p below the range."""
    if e == 0:
        return zero_code
    lg = bit_length(total) - bit_length(e)  # floor(log2(total / e)) is lg or lg - 1
    if (e << lg) > total:
        lg -= 1  # now 2^lg <= 1 / p < 2^(lg+1), the RTL's leading-one form of floor(log2 floor(total / e))
    code = lg + 1 if 128 * total >= 181 * (e << lg) else lg  # 1 / p >= sqrt(2) 2^lg: round up
    return min(code, zero_code)


@njit(cache=True, inline="always")
def log_sqrt2_code(e: int, total: int, zero_code: int) -> int:
    """Code of p = e / total in half-octave steps: round(log_sqrt2(1 / p)), the log2 code of e^2 / total^2."""
    return log2_code(e * e, total * total, zero_code)


@njit(cache=True, parallel=True)
def softmax_int(x: np.ndarray, frac_bits: int, out_bits: int, mode: int, out: np.ndarray, eta: int = 0,
                twin_m: int = 0) -> None:
    """Integer softmax over the last axis of a 2-D int array into ``out``; ``mode`` is UNIFORM, LOG2, LOG_SQRT2 or
    TWIN; ``eta`` (LOG2 only) is SULQ's shift as eta / 2^ETA_FRAC_BITS, ``twin_m`` (TWIN) the region ratio's
    exponent (see module docstring)."""
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
        if mode == LOG2:
            shift = (np.int64(eta) * total + (np.int64(1) << (ETA_FRAC_BITS - 1))) >> ETA_FRAC_BITS if eta else 0
            for j in range(n):
                out[r, j] = log2_code(min(exps[j] + shift, total), total, zero_code)  # p + eta >= 1: code 0
        elif mode == LOG_SQRT2:
            for j in range(n):
                out[r, j] = log_sqrt2_code(exps[j], total, zero_code)
        elif mode == TWIN:
            factor = ((np.int64(1) << SOFTMAX_NORM_BITS) - 1) // total
            region = np.int64(1) << (out_bits - 1)
            fine, coarse = SOFTMAX_NORM_BITS - (out_bits - 1 + twin_m), SOFTMAX_NORM_BITS - (out_bits - 1)
            for j in range(n):
                p = exps[j] * factor
                q1 = (p + (np.int64(1) << (fine - 1))) >> fine
                if q1 < region:
                    out[r, j] = q1
                else:
                    out[r, j] = region + min((p + (np.int64(1) << (coarse - 1))) >> coarse, region - 1)
        else:
            factor = ((np.int64(1) << SOFTMAX_NORM_BITS) - 1) // total
            half = np.int64(1) << (SOFTMAX_NORM_BITS - out_bits - 1)
            for j in range(n):
                out[r, j] = min((exps[j] * factor + half) >> (SOFTMAX_NORM_BITS - out_bits), zero_code)

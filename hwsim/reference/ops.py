"""Reference integer ops (numpy int64, vectorised the obvious way). See each hwsim kernel for the paper and formula."""
from __future__ import annotations

import math

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


def _exp_fixed(d: np.ndarray, f: int, F: int = 15) -> np.ndarray:
    """2^F * e^(d/2^f) for d <= 0 via I-ViT's shift approximation: d * log2(e) ~ d + d/2 - d/16 (floor divisions),
    then 2^-q * (1 - r/2) for the integer part q and the fraction r of the negated exponent."""
    d = np.asarray(d, I64)
    t = d + d // 2 - d // 16
    u = -t
    q = u // (I64(1) << f)
    r = u - q * (I64(1) << f)
    frac = (r << F) // (I64(1) << (f + 1))
    return np.where(q > F, 0, ((I64(1) << F) - frac) >> np.minimum(q, F))


def softmax(x: np.ndarray, frac_bits: int, out_bits: int, mode: int, eta: int = 0, twin_m: int = 0) -> np.ndarray:
    """``mode`` 0 uniform, 1 log2, 2 log-sqrt(2), 3 twin-uniform codes. A log code counts the rounding thresholds the ratio
    r = S / E passes, r^q >= (181/128) 2^(k-1) for k = 1, 2, ... (q = 1 for log2, q = 2 for log-sqrt(2)): the
    round-in-the-log-domain code with sqrt(2) ~ 181/128, written without a logarithm. ``eta`` (log2): SULQ's
    E + eta S / 2^12 (rounded half up) in place of E. A twin code counts the half-step thresholds
    P >= (2j - 1) 2^(30 - f) of the fine step 2^-f, f = b - 1 + m, and of the coarse step 2^-(b-1)."""
    x = np.asarray(x, I64)
    e = _exp_fixed(x - x.max(-1, keepdims=True), frac_bits)
    total = e.sum(-1, keepdims=True)
    if mode == 3:
        p = e * ((I64(2**31) - 1) // total)
        region = 2 ** (out_bits - 1)

        def count(f: int, levels: int) -> np.ndarray:
            return sum((p >= (2 * j - 1) * 2 ** (30 - f)).astype(I64) for j in range(1, levels + 1))

        fine = count(out_bits - 1 + twin_m, region)
        return np.where(fine < region, fine, region + count(out_bits - 1, region - 1))
    if mode == 0:
        code = (e * ((I64(2**31) - 1) // total) + (I64(1) << (30 - out_bits))) >> (31 - out_bits)  # round to nearest
        return np.minimum(code, 2**out_bits - 1)
    top = 2**out_bits - 1
    if eta:
        e = e + (eta * total + 2048) // 4096
    num, den = (total, e) if mode == 1 else (total * total, e * e)
    code = np.zeros(e.shape, I64)
    for k in range(1, top + 1):
        code += 128 * num >= 181 * den * (I64(1) << (k - 1))
    return np.where(e == 0, top, code)


def gelu(x: np.ndarray, frac_bits: int, sig_bits: int = 8) -> np.ndarray:
    """x * sigmoid(1.702 x) with 1.702 ~ 1 + 1/2 + 1/8 + 1/16 and the sigmoid from the shift exponent."""
    v = np.asarray(x, I64)
    z = v + v // 2 + v // 8 + v // 16
    e = _exp_fixed(-np.abs(z), frac_bits)
    sp = (I64(1) << (15 + sig_bits)) // ((I64(1) << 15) + e)
    return v * np.where(z >= 0, sp, (I64(1) << sig_bits) - sp)


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, shift: np.ndarray, bits: int,
              mean_frac_bits: int = 8) -> np.ndarray:
    """y = 2^F x - mean (F fraction bits, rounded half up); y * (2^(31+F) // isqrt(sum y^2)) * gamma + beta, shifted
    per channel. ``mean_frac_bits=0`` is I-ViT's whole-code mean (kept for the precision bench)."""
    x = np.asarray(x, I64)
    c = x.shape[-1]
    f = mean_frac_bits
    mu = (x.sum(-1, keepdims=True) * 2 ** (f + 1) + c) // (2 * c)
    y = x * 2**f - mu
    var = (y * y).sum(-1, keepdims=True)
    std = np.vectorize(lambda v: max(math.isqrt(int(v)), 1), otypes=[np.int64])(var)
    k = (I64(1) << (31 + f)) // std
    acc = y * k * np.asarray(gamma, I64) + np.asarray(beta, I64)
    return saturate(round_shift(acc, np.asarray(shift, I64)), bits, True)[0]


def add(a: np.ndarray, b: np.ndarray, shift_a: int, shift_b: int, bits: int, subtract: bool = False) -> np.ndarray:
    right = round_shift(b, shift_b)
    return saturate(round_shift(a, shift_a) + (-right if subtract else right), bits, True)[0]


def silu(x: np.ndarray, frac_bits: int, sig_bits: int = 8) -> np.ndarray:
    """x * sigmoid(x): GELU's shift sigmoid (``gelu``) at gain 1."""
    v = np.asarray(x, I64)
    e = _exp_fixed(-np.abs(v), frac_bits)
    sp = (I64(1) << (15 + sig_bits)) // ((I64(1) << 15) + e)
    return v * np.where(v >= 0, sp, (I64(1) << sig_bits) - sp)


def hardswish(x: np.ndarray, frac_bits: int) -> np.ndarray:
    """x * clip(x + 3, 0, 6), the 1/6 left to the scale."""
    v = np.asarray(x, I64)
    return v * np.clip(v + 3 * 2**frac_bits, 0, 6 * 2**frac_bits)


def avgpool2d(x: np.ndarray, kernel: int, stride: int, padding: int, count_include_pad: bool, zero_point: int,
              frac_bits: int) -> np.ndarray:
    """2^F * window mean through a 16-bit reciprocal of the window's count (hwsim.kernels.pool), x [B, C, H, W]."""
    v = np.asarray(x, I64) - zero_point
    b, c, h, w = v.shape
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    out = np.zeros((b, c, ho, wo), I64)
    for i in range(ho):
        for j in range(wo):
            r0, q0 = i * stride - padding, j * stride - padding
            rows = slice(max(r0, 0), min(r0 + kernel, h))
            cols = slice(max(q0, 0), min(q0 + kernel, w))
            total = v[:, :, rows, cols].sum(axis=(2, 3))
            count = kernel * kernel if count_include_pad else (rows.stop - rows.start) * (cols.stop - cols.start)
            recip = ((1 << (frac_bits + 17)) // count + 1) >> 1
            out[:, :, i, j] = (total * recip + (1 << 15)) >> 16
    return out


def log2_decode(codes: np.ndarray, code_bits: int) -> np.ndarray:
    """Log2 softmax codes -> integers 2^(2^b - 2 - code), 0 for the zero code (attn @ V as shifts)."""
    codes = np.asarray(codes, I64)
    top = 2**code_bits - 2
    return np.where(codes == top + 1, 0, np.left_shift(I64(1), np.clip(top - codes, 0, None)))


def log_sqrt2_decode(codes: np.ndarray, code_bits: int) -> np.ndarray:
    """Log-sqrt(2) softmax codes -> integers 2^(T - ceil(c / 2)) * (128, or 181 for odd c), T = 2^(b-1) - 1, 0 for
    the zero code: 2^-(c/2) at scale 2^-(T + 7), with sqrt(2) ~ 181/128."""
    codes = np.asarray(codes, I64)
    t = 2 ** (code_bits - 1) - 1
    mant = np.where(codes % 2 == 1, 181, 128)
    return np.where(codes >= 2**code_bits - 1, 0, mant * np.left_shift(I64(1), np.clip(t - (codes + 1) // 2, 0, None)))


def sulq_matmul(codes: np.ndarray, v_nk: np.ndarray, code_bits: int, eta: int) -> np.ndarray:
    """SULQ attn @ V in int64: sum_k (2^-c_k - eta) V_nk at scale 2^-T, T = max(2^b - 2, 12): every code's value
    times 2^T is the integer 2^(T - c) (0 for the top code) minus eta 2^(T - 12)."""
    codes = np.asarray(codes, I64)
    t = max(2**code_bits - 2, 12)
    value = np.where(codes >= 2**code_bits - 1, 0, np.left_shift(I64(1), np.clip(t - codes, 0, None))) \
        - I64(eta) * 2 ** (t - 12)
    return matmul(value, v_nk)


def twin_decode(codes: np.ndarray, bits: int, m: int, signed: bool) -> np.ndarray:
    """Twin-uniform codes -> their integers at the fine step (hwsim.kernels.twin): ``sign`` codes keep negatives and
    scale the rest by 2^m; ``flag`` codes scale the magnitude by 2^m where bit b-1 is set."""
    codes = np.asarray(codes, I64)
    if signed:
        return np.where(codes < 0, codes, codes * 2**m)
    flag, magnitude = np.divmod(codes, 2 ** (bits - 1))
    return magnitude * (1 + flag * (2**m - 1))


def requant_twin(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, m: int, bits: int) -> np.ndarray:
    """Sign-region twin requantization: the fine grid for x < 0, the 2^m coarser one for x >= 0 (each clamped to its
    half of the signed b-bit range); ``multiplier`` None means shift mode."""
    x = np.asarray(x, I64)
    scaled = x if multiplier is None else x * np.asarray(multiplier, I64)
    fine = np.maximum(round_shift(scaled, shift), -(2 ** (bits - 1)))
    coarse = np.minimum(round_shift(scaled, np.asarray(shift, I64) + m), 2 ** (bits - 1) - 1)
    return np.where(x < 0, np.minimum(fine, 0), np.maximum(coarse, 0))


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: int, padding: int, groups: int = 1,
           pad_value: int = 0) -> np.ndarray:
    """Direct convolution, x [B, C, H, W], w [O, C / groups, kh, kw] -> int64 [B, O, H', W']: for every kernel tap,
    the strided input window times that tap's weights, summed; output channel o reads the input channels of group
    o // (O / groups); the border holds ``pad_value``."""
    x = np.pad(np.asarray(x, I64), ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=pad_value)
    o, cg, kh, kw = w.shape
    b = x.shape[0]
    h_out = (x.shape[2] - kh) // stride + 1
    w_out = (x.shape[3] - kw) // stride + 1
    wg = np.asarray(w, I64).reshape(groups, o // groups, cg, kh, kw)
    out = np.zeros((b, groups, o // groups, h_out, w_out), dtype=I64)
    for di in range(kh):
        for dj in range(kw):
            window = x[:, :, di:di + stride * (h_out - 1) + 1:stride, dj:dj + stride * (w_out - 1) + 1:stride]
            window = window.reshape(b, groups, cg, h_out, w_out)
            out += np.einsum("bgchw,goc->bgohw", window, wg[:, :, :, di, dj])
    out = out.reshape(b, o, h_out, w_out)
    return out if bias is None else out + np.asarray(bias, I64)[None, :, None, None]

"""Integer element-wise activations of hybrid models (MobileViT, EfficientFormer, MobileNetV3-style blocks).

SiLU (Elfwing et al., 2018; "Swish", Ramachandran et al., 2017): x * sigmoid(x), with the sigmoid computed as I-ViT's
ShiftGELU computes GELU's (Li & Gu, ICCV 2023; hwsim.kernels.gelu) at gain 1 instead of 1.702. For x with f
fractional bits (scale 2^-f):
    E = exp_shift(-|x|, f, F=15);  sp = floor(2^(F+P) / (2^F + E));  sig = sp if x >= 0 else 2^P - sp
    out = x * sig                                           (scale 2^-(f+P), P sigmoid bits)
Hardswish (Howard et al., "Searching for MobileNetV3", ICCV 2019): x * relu6(x + 3) / 6:
    t = clamp(x + 3 * 2^f, 0, 6 * 2^f);  out = x * t        (scale 2^-2f / 6)
The 1/6 stays in the output's scale, so the requantization that follows is dyadic (no divider, no table).
ReLU: out = max(x, z) for codes with zero point z (an accumulator: z = 0); the scale and format are unchanged.
Every kernel saturates its output to [qmin, qmax] and returns the number of saturated elements.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from hwsim.kernels.gelu import times_sigmoid
from hwsim.kernels.requant import clamp


@njit(cache=True, parallel=True)
def silu_int(x: np.ndarray, frac_bits: int, sig_bits: int, qmin: int, qmax: int, out: np.ndarray) -> int:
    fx, fo = x.ravel(), out.ravel()
    saturated = 0
    for i in prange(fx.shape[0]):
        v = np.int64(fx[i])
        r, hit = clamp(times_sigmoid(v, v, frac_bits, sig_bits), qmin, qmax)
        saturated += hit
        fo[i] = r
    return saturated


@njit(cache=True, parallel=True)
def hardswish_int(x: np.ndarray, frac_bits: int, qmin: int, qmax: int, out: np.ndarray) -> int:
    fx, fo = x.ravel(), out.ravel()
    six = np.int64(6) << frac_bits
    three = np.int64(3) << frac_bits
    saturated = 0
    for i in prange(fx.shape[0]):
        v = np.int64(fx[i])
        t = min(max(v + three, np.int64(0)), six)
        r, hit = clamp(v * t, qmin, qmax)
        saturated += hit
        fo[i] = r
    return saturated


@njit(cache=True, parallel=True)
def relu_int(x: np.ndarray, zero_point: int, out: np.ndarray) -> None:
    fx, fo = x.ravel(), out.ravel()
    for i in prange(fx.shape[0]):
        fo[i] = max(np.int64(fx[i]), np.int64(zero_point))

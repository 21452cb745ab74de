"""Integer element-wise product of two code tensors, broadcast: out = (a - z_a) * (b - z_b), saturated and counted.
The scale of the product is the product of the scales (per element); a requantization follows. Used for a
per-channel scaling by a constant (EfficientFormer's LayerScale after a pooling mixer, where no GEMM precedes it to
fold into) and gating products of hybrids.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from hwsim.kernels.requant import clamp


@njit(cache=True, parallel=True)
def mul_int(a: np.ndarray, b: np.ndarray, zero_a: int, zero_b: int, qmin: int, qmax: int, out: np.ndarray) -> int:
    """``a``, ``b``, ``out`` of one shape (broadcast beforehand); returns the saturation count."""
    fa, fb, fo = a.ravel(), b.ravel(), out.ravel()
    saturated = 0
    for i in prange(fa.shape[0]):
        v, hit = clamp((np.int64(fa[i]) - zero_a) * (np.int64(fb[i]) - zero_b), qmin, qmax)
        saturated += hit
        fo[i] = v
    return saturated

"""Integer average pooling over k x k windows (EfficientFormer's pooling token mixer, Li et al., NeurIPS 2022, after
PoolFormer, Yu et al., CVPR 2022).

For codes x with zero point z, a window W of ``count`` elements (the window's size, or with
``count_include_pad=False`` only its elements inside the map, as torch's AvgPool2d):
    s = sum_{W} (x - z)
    out = (s * R[count] + 2^15) >> 16,   R[count] = floor(2^(F + 16) / count + 1/2)
i.e. 2^F * mean rounded half up through a 16-bit fixed-point reciprocal (a multiplier per window size, no divider);
the output carries F more fractional bits than the input (scale 2^-F times the input's) and is an accumulator for the
next requantization. Padded positions hold real zero (code z) and add nothing.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

RECIP_BITS = 16


def reciprocals(max_count: int, frac_bits: int) -> np.ndarray:
    """R[c] = floor(2^(F + 16) / c + 1/2) for c = 0..max_count (R[0] unused)."""
    counts = np.arange(max_count + 1, dtype=np.int64)
    counts[0] = 1
    return (((np.int64(1) << (frac_bits + RECIP_BITS + 1)) // counts) + 1) >> 1


@njit(cache=True, parallel=True)
def avgpool_int(x: np.ndarray, kernel: int, stride: int, padding: int, count_include_pad: bool, zero_point: int,
                recip: np.ndarray, out: np.ndarray) -> None:
    """x [B, C, H, W] -> out [B, C, H', W'] (see the module docstring)."""
    b, c, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    half = np.int64(1) << (RECIP_BITS - 1)
    for task in prange(b * c):
        n, ch = task // c, task % c
        for i in range(ho):
            for j in range(wo):
                s = np.int64(0)
                count = 0
                for di in range(kernel):
                    r = i * stride - padding + di
                    for dj in range(kernel):
                        q = j * stride - padding + dj
                        if 0 <= r < h and 0 <= q < w:
                            s += np.int64(x[n, ch, r, q]) - zero_point
                            count += 1
                if count_include_pad:
                    count = kernel * kernel
                out[n, ch, i, j] = (s * recip[count] + half) >> RECIP_BITS

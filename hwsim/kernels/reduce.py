"""Sum over trailing elements: the integer form of mean pooling (Swin's and pooled ViTs' global average pool).

The 1/N of the mean is not computed here: it travels in the output's scale (real = sum * s_in / N), which the
quantizer folds into the classifier when that is where the mean goes (quant.graph.reparam), so no divider is needed.
The sum saturates to the output's accumulator range and counts its saturations, like every kernel.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from hwsim.kernels.requant import clamp


@njit(cache=True, parallel=True)
def sum_rows(x: np.ndarray, qmin: int, qmax: int, out: np.ndarray) -> int:
    """out[r] = clamp(sum_j x[r, j]) with an int64 accumulator; returns the saturation count."""
    rows, n = x.shape
    saturated = 0
    for r in prange(rows):
        acc = np.int64(0)
        for j in range(n):
            acc += np.int64(x[r, j])
        v, hit = clamp(acc, qmin, qmax)
        saturated += hit
        out[r] = v
    return saturated

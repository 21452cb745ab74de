"""The forward pass of quant.fakequant's fused fake-quant node in one numba loop over the tensor.

torch evaluates ``(clamp(floor(x / s + 1/2) + z, lo, hi) - z) * s`` and the masks its backward needs as about ten
passes over the tensor, each allocating a temporary; training a model whose every activation is fake-quantized spends
most of its time there. This loop computes the same IEEE operations in the same order, in the input's precision, so
its results are bit-identical to torch's (tests/quant/test_fakequant.py), and writes the output and what the backward
reads (x / s, the clamped code minus z, the inside-the-range mask) in one pass. The scale varies along at most one
axis: the tensor is seen as [outer, channels, inner].
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange


@njit(cache=True, parallel=True)
def _forward(x, scale, lo, hi, zero, out, v_out, q_out, inside_out):
    outer, channels, inner = x.shape
    half = x.dtype.type(0.5)
    for o in prange(outer):
        for c in range(channels):
            s = scale[c]
            for i in range(inner):
                v = x[o, c, i] / s
                code = np.floor(v + half) + zero
                inside = code >= lo and code <= hi
                q = min(max(code, lo), hi) - zero
                v_out[o, c, i] = v
                q_out[o, c, i] = q
                inside_out[o, c, i] = inside
                out[o, c, i] = q * s


def _layout(x: torch.Tensor, scale: torch.Tensor) -> tuple[int, int, int] | None:
    """(outer, channels, inner) of ``x`` for a ``scale`` broadcasting along at most one axis; None otherwise."""
    if scale.numel() == 1:
        return (1, 1, x.numel())
    dims = [i for i, n in enumerate(scale.shape) if n > 1]
    if len(dims) != 1:
        return None
    axis = dims[0] + x.dim() - scale.dim()
    if axis < 0 or x.shape[axis] != scale.shape[dims[0]]:
        return None
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    return (outer, x.shape[axis], inner)


def fused_forward(x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int, zero: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(out, x / s, clamped code - z, inside) as torch computes them, or None where the loop does not apply (a
    non-contiguous tensor, a scale on several axes, mixed precisions)."""
    layout = _layout(x, scale)
    if layout is None or not x.is_contiguous() or x.dtype not in (torch.float32, torch.float64) \
            or scale.dtype != x.dtype:
        return None
    xs = x.detach().numpy().reshape(layout)
    sc = np.ascontiguousarray(scale.detach().reshape(-1).numpy())
    dtype = xs.dtype.type
    out, v, q = (np.empty(layout, dtype=xs.dtype) for _ in range(3))
    inside = np.empty(layout, dtype=np.bool_)
    _forward(xs, sc, dtype(lo), dtype(hi), dtype(zero), out, v, q, inside)
    return tuple(torch.from_numpy(a).reshape(x.shape) for a in (out, v, q, inside))

"""Integer GEMM kernels: batched int16-operand matrix products with int32 (or int64) accumulation.

``gemm(a[G, M, K], b[G, N, K]) -> acc[G, M, N]``: the right operand is packed once per layer as ``[N, K]`` (weights are
stored that way; K^T for Q.K^T is a view of K), so both operands stream contiguously along K. Operands are int16 in
memory: int8/int4 values and PTF-shifted or log2-decoded ones fit. The int32 path is taken only when the worst-case
|acc| = K * max|a| * max|b| + max|bias| cannot exceed int32 (so it never wraps); otherwise int64 is used. Results outside
the configured accumulator width are saturated and counted, never wrapped.

Speed: the inner loop is a single int16 x int16 -> int32 dot product over contiguous K, which LLVM lowers to
``vpmaddwd`` (measured: it does not vectorize several reductions in one loop, so register tiling in Python source
loses the vector unit); rows run in parallel threads (``prange``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

INT32_MAX = 2**31 - 1


@njit(cache=True, parallel=True)
def _gemm_i32(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    g_count, m, k = a.shape
    n = b.shape[1]
    for task in prange(g_count * m):
        g = task // m
        row = a[g, task % m]
        dst = out[g, task % m]
        for j in range(n):
            col = b[g, j]
            # One reduction per loop: the form LLVM vectorizes into vpmaddwd (several in one loop it does not).
            acc = np.int32(0)
            for p in range(k):
                acc += row[p] * col[p]
            dst[j] = acc


@njit(cache=True, parallel=True)
def _gemm_i64(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    g_count, m, k = a.shape
    n = b.shape[1]
    for task in prange(g_count * m):
        g = task // m
        i = task % m
        for j in range(n):
            acc = np.int64(0)
            for p in range(k):
                acc += np.int64(a[g, i, p]) * np.int64(b[g, j, p])
            out[g, i, j] = acc


@njit(cache=True)
def _add_bias_saturate(acc: np.ndarray, bias: np.ndarray, lo: int, hi: int, out: np.ndarray) -> int:
    g_count, m, n = acc.shape
    has_bias = bias.shape[0] > 0
    saturated = 0
    for g in range(g_count):
        for i in range(m):
            for j in range(n):
                v = np.int64(acc[g, i, j])
                if has_bias:
                    v += bias[j]
                if v > hi:
                    v = hi
                    saturated += 1
                elif v < lo:
                    v = lo
                    saturated += 1
                out[g, i, j] = v
    return saturated


def _max_abs(x: np.ndarray) -> int:
    return int(np.abs(x.astype(np.int64)).max()) if x.size else 0


def gemm(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, acc_bits: int = 32) -> tuple[np.ndarray, int]:
    """acc[g, m, n] = sum_k a[g, m, k] * b[g, n, k] + bias[n], saturated to signed ``acc_bits``.

    Returns ``(acc int32 [G, M, N], number of saturated outputs)``. ``a`` and ``b`` are 3-D int16-compatible arrays.
    """
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"gemm shapes do not fit: a {a.shape}, b {b.shape} (want [G,M,K] and [G,N,K])")
    if not 2 <= acc_bits <= 32:
        raise ValueError(f"accumulator width must be 2..32 bits, got {acc_bits}")
    a16 = np.ascontiguousarray(a, dtype=np.int16)
    b16 = np.ascontiguousarray(b, dtype=np.int16)
    bias64 = np.zeros(0, np.int64) if bias is None else np.ascontiguousarray(bias, dtype=np.int64)
    g, m, k = a16.shape
    n = b16.shape[1]
    bound = k * _max_abs(a16) * _max_abs(b16) + _max_abs(bias64)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    if bound <= INT32_MAX:
        raw = np.empty((g, m, n), dtype=np.int32)
        _gemm_i32(a16, b16, raw)
        if bias is None and bound <= hi:
            return raw, 0
    else:
        raw = np.empty((g, m, n), dtype=np.int64)
        _gemm_i64(a16, b16, raw)
    out = np.empty((g, m, n), dtype=np.int32)
    saturated = _add_bias_saturate(raw, bias64, lo, hi, out)
    return out, saturated

"""Integer GEMM kernels: batched int16-operand matrix products with int32 (or int64) accumulation.

``gemm(a[G, M, K], b[G, N, K]) -> acc[G, M, N]``: the right operand is packed once per layer as ``[N, K]`` (weights are
stored that way; K^T for Q.K^T is a view of K), so both operands stream contiguously along K. Operands are int16 in
memory: int8/int4 values and PTF-shifted or log2-decoded ones fit. The int32 path is taken only when the worst-case
|acc| = K * max|a| * max|b| + max|bias| cannot exceed int32 (so it never wraps); otherwise int64 is used. Results outside
the configured accumulator width are saturated and counted, never wrapped.

Speed: the inner loop is an int16 x int16 -> int32 multiply-add over contiguous K, which LLVM lowers to ``vpmaddwd``;
4 x 4 register tiles reuse each loaded operand four times; rows run in parallel threads (``prange``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

INT32_MAX = 2**31 - 1


@njit(cache=True, parallel=True)
def _gemm_i32(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    g_count, m, k = a.shape
    n = b.shape[1]
    m_tiles = (m + 3) // 4
    for task in prange(g_count * m_tiles):
        g = task // m_tiles
        i0 = (task % m_tiles) * 4
        i_end = min(i0 + 4, m)
        if i_end - i0 == 4:
            for j0 in range(0, n - 3, 4):
                c00 = c01 = c02 = c03 = np.int32(0)
                c10 = c11 = c12 = c13 = np.int32(0)
                c20 = c21 = c22 = c23 = np.int32(0)
                c30 = c31 = c32 = c33 = np.int32(0)
                for p in range(k):
                    a0 = np.int32(a[g, i0, p])
                    a1 = np.int32(a[g, i0 + 1, p])
                    a2 = np.int32(a[g, i0 + 2, p])
                    a3 = np.int32(a[g, i0 + 3, p])
                    b0 = np.int32(b[g, j0, p])
                    b1 = np.int32(b[g, j0 + 1, p])
                    b2 = np.int32(b[g, j0 + 2, p])
                    b3 = np.int32(b[g, j0 + 3, p])
                    c00 += a0 * b0
                    c01 += a0 * b1
                    c02 += a0 * b2
                    c03 += a0 * b3
                    c10 += a1 * b0
                    c11 += a1 * b1
                    c12 += a1 * b2
                    c13 += a1 * b3
                    c20 += a2 * b0
                    c21 += a2 * b1
                    c22 += a2 * b2
                    c23 += a2 * b3
                    c30 += a3 * b0
                    c31 += a3 * b1
                    c32 += a3 * b2
                    c33 += a3 * b3
                out[g, i0, j0], out[g, i0, j0 + 1], out[g, i0, j0 + 2], out[g, i0, j0 + 3] = c00, c01, c02, c03
                out[g, i0 + 1, j0], out[g, i0 + 1, j0 + 1], out[g, i0 + 1, j0 + 2], out[g, i0 + 1, j0 + 3] = c10, c11, c12, c13
                out[g, i0 + 2, j0], out[g, i0 + 2, j0 + 1], out[g, i0 + 2, j0 + 2], out[g, i0 + 2, j0 + 3] = c20, c21, c22, c23
                out[g, i0 + 3, j0], out[g, i0 + 3, j0 + 1], out[g, i0 + 3, j0 + 2], out[g, i0 + 3, j0 + 3] = c30, c31, c32, c33
            j_start = n - n % 4
        else:
            j_start = 0
        # Remainder columns (and the short last row tile): plain dot products.
        for i in range(i0, i_end):
            jj = j_start if i_end - i0 == 4 else 0
            for j in range(jj, n):
                acc = np.int32(0)
                for p in range(k):
                    acc += np.int32(a[g, i, p]) * np.int32(b[g, j, p])
                out[g, i, j] = acc


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

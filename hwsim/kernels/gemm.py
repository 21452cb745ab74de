"""Integer GEMM: batched int16-operand matrix products with int32 (or int64) accumulation, saturated and counted.

``gemm(a[G, M, K], b[G, N, K]) -> acc[G, M, N]``. Operands are int16 in memory: int8/int4 values and PTF-shifted or
log2-decoded ones fit. The int32 path is taken only when the worst case |acc| = K * max|a| * max|b| + max|bias| cannot
exceed int32, so it never wraps; otherwise the plain int64 loop runs. Results outside the configured accumulator width
are saturated and counted, never wrapped.

Speed (the int32 path): the right operand is packed into column panels (``pack_b``), once per layer for weights, and
a register-tiled micro-kernel (hwsim.kernels.gemm_tiled: 4 x 16 int32 accumulators, initialised with the bias, fed by
``vpmaddwd``) streams the left operand's int16 pairs against them; row blocks run in parallel threads (``prange``). The left operand needs no
copy when it is int16, contiguous and K is even (its pairs are read as int32 in place).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from hwsim.kernels.gemm_tiled import COLS, ROWS, gemm_i32_tiled
from hwsim.kernels.requant import clamp

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class PackedB:
    """A right operand b[G, N, K] in the micro-kernel's panel layout, with what gemm needs to know about it."""
    panels: np.ndarray  # int16 [G, ceil(N / COLS), ceil(K / 2), 2 * COLS], zero padded
    n: int
    k: int
    max_abs: int

    @property
    def groups(self) -> int:
        return int(self.panels.shape[0])

    def unpack(self) -> np.ndarray:
        """The original b[G, N, K] (int16)."""
        g, nb, k2, _ = self.panels.shape
        b = self.panels.reshape(g, nb, k2, COLS, 2).transpose(0, 1, 3, 2, 4).reshape(g, nb * COLS, 2 * k2)
        return np.ascontiguousarray(b[:, :self.n, :self.k])


def pack_b(b: np.ndarray, k_major: bool = False) -> PackedB:
    """Pack b[G, N, K] (or b[G, K, N] with ``k_major``, e.g. V in attn @ V) into column panels of COLS outputs."""
    if b.ndim != 3:
        raise ValueError(f"gemm right operand must be 3-D, got shape {b.shape}")
    g, n, k = (b.shape[0], b.shape[2], b.shape[1]) if k_major else b.shape
    n_pad, k_pad = -(-n // COLS) * COLS, k + (k & 1)
    buf = np.zeros((g, k_pad, n_pad) if k_major else (g, n_pad, k_pad), np.int16)
    if k_major:
        buf[:, :k, :n] = b
        panels = buf.reshape(g, k_pad // 2, 2, n_pad // COLS, COLS).transpose(0, 3, 1, 4, 2)
    else:
        buf[:, :n, :k] = b
        panels = buf.reshape(g, n_pad // COLS, COLS, k_pad // 2, 2).transpose(0, 1, 3, 2, 4)
    panels = np.ascontiguousarray(panels).reshape(g, n_pad // COLS, k_pad // 2, 2 * COLS)
    return PackedB(panels, int(n), int(k), _max_abs(buf))


def _pairs(a16: np.ndarray) -> np.ndarray:
    """a[G, M, K] int16 -> int32 view of (a[2kk], a[2kk+1]) pairs [G, max(M, ROWS), ceil(K / 2)], copying only to pad."""
    g, m, k = a16.shape
    if k & 1 or m < ROWS:
        buf = np.zeros((g, max(m, ROWS), k + (k & 1)), np.int16)
        buf[:, :m, :k] = a16
        a16 = buf
    return a16.view(np.int32)


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
    has_bias = bias.shape[1] > 0
    per_group = bias.shape[0] > 1
    saturated = 0
    for g in range(g_count):
        for i in range(m):
            for j in range(n):
                v = np.int64(acc[g, i, j])
                if has_bias:
                    v += bias[g if per_group else 0, j]
                v, hit = clamp(v, lo, hi)
                saturated += hit
                out[g, i, j] = v
    return saturated


def _max_abs(x: np.ndarray) -> int:
    return max(int(x.max()), -int(x.min())) if x.size else 0


def gemm(a: np.ndarray, b: np.ndarray | PackedB, bias: np.ndarray | None = None,
         acc_bits: int = 32) -> tuple[np.ndarray, int]:
    """acc[g, m, n] = sum_k a[g, m, k] * b[g, n, k] + bias[n], saturated to signed ``acc_bits``.

    Returns ``(acc int32 [G, M, N], number of saturated outputs)``. ``a`` is a 3-D int16-compatible array; ``b`` is
    one too, or a ``PackedB`` from ``pack_b`` (weights: packed once per layer). ``bias`` is [N], or [G, N] for a bias
    per group (a grouped convolution's output channels).
    """
    if not isinstance(b, PackedB):
        if b.ndim != 3:
            raise ValueError(f"gemm shapes do not fit: a {a.shape}, b {b.shape} (want [G,M,K] and [G,N,K])")
        b = pack_b(b)
    if a.ndim != 3 or a.shape[0] != b.groups or a.shape[2] != b.k:
        raise ValueError(f"gemm shapes do not fit: a {a.shape}, b {(b.groups, b.n, b.k)} (want [G,M,K] and [G,N,K])")
    if not 2 <= acc_bits <= 32:
        raise ValueError(f"accumulator width must be 2..32 bits, got {acc_bits}")
    a16 = np.ascontiguousarray(a, dtype=np.int16)
    g, m, k = a16.shape
    b_n = b.n
    bias64 = np.zeros((1, 0), np.int64) if bias is None else np.ascontiguousarray(bias, dtype=np.int64).reshape(-1, b_n)
    if bias64.shape[0] not in (1, g):
        raise ValueError(f"gemm bias of shape {np.shape(bias)} fits neither [N] nor [G, N] = [{g}, {b_n}]")
    bound = k * _max_abs(a16) * b.max_abs + _max_abs(bias64)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    if bound <= INT32_MAX:  # int32 never wraps: the micro-kernel adds the bias too
        bias32 = np.zeros((bias64.shape[0], b.panels.shape[1] * COLS), np.int32)
        bias32[:, :bias64.shape[1]] = bias64
        bias32 = bias32.reshape(-1)
        raw = np.empty((g, m, b_n), dtype=np.int32)
        if m and b_n:
            gemm_i32_tiled(_pairs(a16), b.panels, bias32, raw)
        if bound <= hi:
            return raw, 0
        bias64 = np.zeros((1, 0), np.int64)  # already added
    else:
        raw = np.empty((g, m, b_n), dtype=np.int64)
        _gemm_i64(a16, b.unpack(), raw)
    out = np.empty((g, m, b_n), dtype=np.int32)
    saturated = _add_bias_saturate(raw, bias64, lo, hi, out)
    return out, saturated

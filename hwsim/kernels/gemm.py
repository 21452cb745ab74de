"""Integer GEMM: batched int16-operand matrix products with int32 (or int64) accumulation, saturated and counted.

``gemm(a[G, M, K], b[G, N, K]) -> acc[G, M, N]``. Operands are int16 in memory: int8/int4 values and PTF-shifted or
log2-decoded ones fit. The int32 path is taken only when the worst case |acc| = K * max|a| * max|b| + max|bias| cannot
exceed int32, so it never wraps; otherwise the plain int64 loop runs. Results outside the configured accumulator width
are saturated and counted, never wrapped.

Speed (the int32 path): when both operands fit bytes (weights in [-128, 127], activations in [-128, 127] or
[0, 255]) and the CPU has a byte multiply-add (hwsim.kernels.gemm_bytes: VPDPBUSD, or VPMADDUBSW where no int16 pair
can saturate), four products per int32 lane run per instruction, chosen per call from the operands' actual ranges;
otherwise the right operand is packed into int16 column panels (``PackedB.panels``) and a register-tiled
micro-kernel (hwsim.kernels.gemm_tiled: 4 x 16 int32 accumulators, initialised with the bias, fed by ``vpmaddwd``)
streams the left operand's int16 pairs against them. Either layout is built once per ``PackedB`` (weights: once per
layer). Row blocks run in parallel threads (``prange``). The left operand needs no copy when it is int16, contiguous
and K is even (its pairs are read as int32 in place); the byte path converts each task's rows on the fly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numba import njit, prange

from hwsim.kernels.gemm_bytes import AVX2_PAIR_MAX, GEMM_BYTES, VNNI, isa_available, pack_bytes
from hwsim.kernels.gemm_tiled import COLS, ROWS, gemm_i32_tiled
from hwsim.kernels.requant import clamp

INT32_MAX = 2**31 - 1


@dataclass
class PackedB:
    """A right operand b[G, N, K] (int16, contiguous) with its kernel layouts, each built on first use and kept:
    weights are packed once per layer, so every layout a layer's calls need is built once."""
    b: np.ndarray
    lo: int
    hi: int
    _byte_forms: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def groups(self) -> int:
        return int(self.b.shape[0])

    @property
    def n(self) -> int:
        return int(self.b.shape[1])

    @property
    def k(self) -> int:
        return int(self.b.shape[2])

    @property
    def max_abs(self) -> int:
        return max(self.hi, -self.lo)

    @cached_property
    def panels(self) -> np.ndarray:
        """The int16 path's column panels: int16 [G, ceil(N / COLS), ceil(K / 2), 2 * COLS], zero padded."""
        g, n, k = self.b.shape
        n_pad, k_pad = -(-n // COLS) * COLS, k + (k & 1)
        buf = np.zeros((g, n_pad, k_pad), np.int16)
        buf[:, :n, :k] = self.b
        panels = buf.reshape(g, n_pad // COLS, COLS, k_pad // 2, 2).transpose(0, 1, 3, 2, 4)
        return np.ascontiguousarray(panels).reshape(g, n_pad // COLS, k_pad // 2, 2 * COLS)

    def byte_panels(self, isa: int) -> tuple[np.ndarray, np.ndarray]:
        """The byte path's (panels, column sums) for kernel ``isa`` (hwsim.kernels.gemm_bytes.pack_bytes)."""
        if isa not in self._byte_forms:
            self._byte_forms[isa] = pack_bytes(self.b, isa)
        return self._byte_forms[isa]

    def unpack(self) -> np.ndarray:
        """The original b[G, N, K] (int16)."""
        return self.b


def pack_b(b: np.ndarray, k_major: bool = False) -> PackedB:
    """Hold b[G, N, K] (or b[G, K, N] with ``k_major``, e.g. V in attn @ V) for gemm; layouts are built on use."""
    if b.ndim != 3:
        raise ValueError(f"gemm right operand must be 3-D, got shape {b.shape}")
    b16 = np.ascontiguousarray(b.transpose(0, 2, 1) if k_major else b, dtype=np.int16)
    lo, hi = _range(b16)
    return PackedB(b16, lo, hi)


def _range(x: np.ndarray) -> tuple[int, int]:
    return (int(x.min()), int(x.max())) if x.size else (0, 0)


def byte_path(a_lo: int, a_hi: int, b: PackedB, k: int, bias_abs: int,
              isas: tuple[int, ...]) -> tuple[int, bool] | None:
    """(isa, flip) of the first byte kernel in ``isas`` that computes this product exactly, or None.

    Exact means: b fits signed bytes, a fits unsigned bytes (``flip`` False) or signed ones (flip: a + 128); the
    offset operand's partial sums, bias included, stay inside int32; and for AVX2 no int16 pair sum
    2 * max(a + offset) * max|b| saturates.
    """
    if b.lo < -128 or b.hi > 127:
        return None
    if a_lo >= 0 and a_hi <= 255:
        flip, top = False, a_hi
    elif a_lo >= -128 and a_hi <= 127:
        flip, top = True, a_hi + 128
    else:
        return None
    if k * top * b.max_abs + bias_abs + (128 * k * b.max_abs if flip else 0) > INT32_MAX:
        return None
    for isa in isas:
        if isa == VNNI or 2 * top * b.max_abs <= AVX2_PAIR_MAX:
            return isa, flip
    return None


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


def _padded_bias(bias64: np.ndarray, groups: int, width: int, minus: np.ndarray | None = None) -> np.ndarray:
    """The kernels' bias: int32 [max(groups, G_bias) * width] end to end, zero past N, ``minus`` [G, N] taken out."""
    rows = max(groups, bias64.shape[0])
    out = np.zeros((rows, width), np.int64)
    n = bias64.shape[1] if minus is None else minus.shape[1]
    if bias64.shape[1]:
        out[:, :n] += bias64
    if minus is not None:
        out[:, :n] -= minus
    return out.astype(np.int32).reshape(-1)


def _run_bytes(a16: np.ndarray, b: PackedB, bias64: np.ndarray, path: tuple[int, bool], raw: np.ndarray) -> None:
    isa, flip = path
    panels, sums = b.byte_panels(isa)
    minus = 128 * sums if flip else None  # sum_k (a + 128) b = sum_k a b + 128 sum_k b
    groups = b.groups if flip else 1
    GEMM_BYTES[isa](a16, flip, panels, _padded_bias(bias64, groups, panels.shape[1] * panels.shape[3] // 4, minus),
                    raw)


def _max_abs(x: np.ndarray) -> int:
    lo, hi = _range(x)
    return max(hi, -lo)


def gemm(a: np.ndarray, b: np.ndarray | PackedB, bias: np.ndarray | None = None, acc_bits: int = 32,
         byte_isas: tuple[int, ...] | None = None) -> tuple[np.ndarray, int]:
    """acc[g, m, n] = sum_k a[g, m, k] * b[g, n, k] + bias[n], saturated to signed ``acc_bits``.

    Returns ``(acc int32 [G, M, N], number of saturated outputs)``. ``a`` is a 3-D int16-compatible array; ``b`` is
    one too, or a ``PackedB`` from ``pack_b`` (weights: packed once per layer). ``bias`` is [N], or [G, N] for a bias
    per group (a grouped convolution's output channels). ``byte_isas``: the byte kernels to consider (default: what
    the host runs, ``gemm_bytes.isa_available()``; ``()`` forces the int16 path); every path gives the same result.
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
    a_lo, a_hi = _range(a16)
    bias_abs = _max_abs(bias64)
    bound = k * max(a_hi, -a_lo) * b.max_abs + bias_abs
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    if bound <= INT32_MAX:  # int32 never wraps: the micro-kernel adds the bias too
        raw = np.empty((g, m, b_n), dtype=np.int32)
        if m and b_n:
            path = byte_path(a_lo, a_hi, b, k, bias_abs, isa_available() if byte_isas is None else byte_isas)
            if path is not None:
                _run_bytes(a16, b, bias64, path, raw)
            else:
                gemm_i32_tiled(_pairs(a16), b.panels, _padded_bias(bias64, 1, b.panels.shape[1] * COLS), raw)
        if bound <= hi:
            return raw, 0
        bias64 = np.zeros((1, 0), np.int64)  # already added
    else:
        raw = np.empty((g, m, b_n), dtype=np.int64)
        _gemm_i64(a16, b.unpack(), raw)
    out = np.empty((g, m, b_n), dtype=np.int32)
    saturated = _add_bias_saturate(raw, bias64, lo, hi, out)
    return out, saturated

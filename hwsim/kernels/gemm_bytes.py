"""Byte-operand GEMM: unsigned 8-bit x signed 8-bit quads into int32, an LLVM-IR micro-kernel and its driver.

When both operands of a layer fit bytes (activations in [-128, 127] or [0, 255], weights in [-128, 127]), four
products per 32-bit lane can be summed at once: twice the products per instruction of the int16 path
(hwsim.kernels.gemm_tiled). Two x86 instruction families do it (Intel SDM vol. 2):

  ``vnni``  VPDPBUSD (AVX512-VNNI): lane l += sum_t u8(a[4l+t]) * s8(b[4l+t]) in int32 with no intermediate
            saturation, 16 lanes per 512-bit register: exact for any byte operands.
  ``avx2``  VPMADDUBSW then VPMADDWD by ones (AVX2): the pair sums u8*s8 + u8*s8 are formed in int16 *with
            saturation*, so this path is taken only when 2 * max(a) * max|b| <= 32767 (e.g. unsigned 8-bit
            activations against signed weights of at most 7 bits, or 4-bit codes): then no pair can saturate and
            the result is exact.

Signed activations become unsigned by flipping their top bit (a + 128, a byte XOR); the extra 128 * sum_k b[n, k]
is taken out of the bias before the kernel starts (``PackedBytes.column_sums``), so the kernel's int32 accumulators
hold exactly the int16 path's value when the caller checked the int32 bound for the offset operand too.

The instruction is chosen by the host's CPU features (``isa_available``) and is a compile-time literal of the
driver, so both paths compile and are tested on a VNNI machine, and numba's cache (keyed on the CPU) never hands one
machine's choice to another. Without AVX2 the caller keeps the int16 path: the portable fallback.

Operand layouts:
  A  int16 [G, M, K] as the int16 path gets it; each task converts its group of rows to unsigned byte quads in a
     task-local buffer (an int32 per four bytes), so A is never copied whole.
  B  uint8-typed signed bytes [G, ceil(N / cols), ceil(K / 4), 4 * cols]: entry [kk, 4c + t] = b[c, 4kk + t].

Blocking (Goto & van de Geijn's, at the sizes of this kernel): a TILE_ROWS x cols register tile over a K chunk of
K_CHUNK elements; a task holds a group of row blocks, and each B panel chunk is used against the whole group while
it sits in L1. The micro-kernel alone runs at ~95 % of VPDPBUSD's measured peak when its operands are in L1.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import literally, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

VNNI, AVX2 = 1, 2          # the driver's ``isa`` literal
# Register tile per kernel, (rows, accumulator vectors per row), sized to the vector registers: VNNI has 32 zmm
# (6 x 4 accumulators + 4 B vectors + 1 broadcast), AVX2 16 ymm (4 x 2 + 2 + broadcast, ones and the pair sums).
TILE_ROWS = (0, 6, 4)      # indexed by isa
TILE_VECTORS = (0, 4, 2)
LANES = {VNNI: 16, AVX2: 8}  # int32 lanes per vector: zmm for VNNI, ymm for AVX2
AVX2_PAIR_MAX = 32767      # VPMADDUBSW's int16 pair sum saturates above this
L1_BYTES = 32 * 1024       # data-cache budget of one task's A rows plus one B panel (of one K chunk)
K_CHUNK = 256              # reduction elements per pass over the output tiles


def cols(isa: int) -> int:
    """Output columns per tile of the ``isa`` kernel."""
    return TILE_VECTORS[isa] * LANES[isa]


@lru_cache(maxsize=None)
def isa_available() -> tuple[int, ...]:
    """The byte kernels this host can run, best first (empty: keep the int16 path)."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    found = []
    if features.get("avx512vnni") and features.get("avx512bw") and features.get("avx512f"):
        found.append(VNNI)
    if features.get("avx2"):
        found.append(AVX2)
    return tuple(found)


def _declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    return cgutils.get_or_insert_function(module, ir.FunctionType(ret, args), name)


def _quad_multiply_add(builder: ir.IRBuilder, isa: int, acc: ir.Value, a_quads: ir.Value,
                       b_quads: ir.Value) -> ir.Value:
    """acc + (lane l: sum_t u8(a[4l+t]) * s8(b[4l+t])), operands as <LANES x i32> carrying four bytes per lane."""
    lanes = LANES[isa]
    acc_t = ir.VectorType(ir.IntType(32), lanes)
    module = builder.module
    if isa == VNNI:
        fn = _declare(module, "llvm.x86.avx512.vpdpbusd.512", acc_t, [acc_t, acc_t, acc_t])
        return builder.call(fn, [acc, a_quads, b_quads])
    bytes_t, words_t = ir.VectorType(ir.IntType(8), 4 * lanes), ir.VectorType(ir.IntType(16), 2 * lanes)
    pairs = builder.call(_declare(module, "llvm.x86.avx2.pmadd.ub.sw", words_t, [bytes_t, bytes_t]),
                         [builder.bitcast(a_quads, bytes_t), builder.bitcast(b_quads, bytes_t)])
    ones = ir.Constant(words_t, [1] * (2 * lanes))
    quads = builder.call(_declare(module, "llvm.x86.avx2.pmadd.wd", acc_t, [words_t, words_t]), [pairs, ones])
    return builder.add(acc, quads)


@intrinsic
def tile_dot_bytes(typingctx, isa, a, a_offset, a_stride, b, b_offset, k4, init, init_offset, init_stride, c, c_offset,
                   c_stride):
    """C[c_offset + r * c_stride + j] = INIT[init_offset + r * init_stride + j]
                                     + sum_kk quad(A[a_offset + r * a_stride + kk], B(kk, j)).

    ``isa`` a literal (VNNI or AVX2); ``a`` int32 quads of unsigned bytes, ``b`` the byte panels (quad (kk, j) at
    b_offset + kk * 4 * cols + 4j bytes), ``init`` and ``c`` int32 (``init`` the bias with init_stride 0, or the
    partial sums of an earlier K chunk); r < TILE_ROWS[isa], j < cols(isa), kk < k4.
    """
    if not isinstance(isa, types.IntegerLiteral) or isa.literal_value not in LANES:
        return None
    kind = isa.literal_value
    lanes, n_cols = LANES[kind], cols(kind)
    rows_t, vectors = TILE_ROWS[kind], TILE_VECTORS[kind]
    sig = types.void(isa, a, a_offset, a_stride, b, b_offset, k4, init, init_offset, init_stride, c, c_offset, c_stride)

    def codegen(context, builder, signature, args):
        (_, a_arr, a_off, a_stride_v, b_arr, b_off, k4_v, init_arr, init_off, init_stride_v, c_arr, c_off,
         c_stride_v) = args
        acc_t = ir.VectorType(ir.IntType(32), lanes)
        a_data = context.make_array(signature.args[1])(context, builder, a_arr).data
        b_data = builder.bitcast(context.make_array(signature.args[4])(context, builder, b_arr).data,
                                 ir.IntType(8).as_pointer())
        init_data = context.make_array(signature.args[7])(context, builder, init_arr).data
        c_data = context.make_array(signature.args[10])(context, builder, c_arr).data
        intp = a_stride_v.type

        def const(v: int) -> ir.Constant:
            return ir.Constant(intp, v)

        # Accumulators start at INIT and live in allocas that mem2reg promotes to registers for the K loop.
        def start(r: int, h: int) -> ir.Value:
            at = builder.add(builder.add(init_off, builder.mul(const(r), init_stride_v)), const(lanes * h))
            return builder.load(builder.bitcast(builder.gep(init_data, [at]), acc_t.as_pointer()), align=4)

        acc = [[cgutils.alloca_once_value(builder, start(r, h)) for h in range(vectors)] for r in range(rows_t)]
        row_offsets = [builder.add(a_off, builder.mul(const(r), a_stride_v)) for r in range(rows_t)]
        with cgutils.for_range(builder, k4_v) as loop:
            kk = loop.index
            panel = builder.add(b_off, builder.mul(kk, const(4 * n_cols)))
            b_vec = [builder.load(builder.bitcast(builder.gep(b_data, [builder.add(panel, const(4 * lanes * h))]),
                                                  acc_t.as_pointer()), align=1) for h in range(vectors)]
            for r in range(rows_t):
                quad = builder.load(builder.gep(a_data, [builder.add(row_offsets[r], kk)]))
                splat = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(acc_t, ir.Undefined), quad, ir.Constant(ir.IntType(32), 0)),
                    ir.Constant(acc_t, ir.Undefined), ir.Constant(acc_t, None))
                for h in range(vectors):
                    builder.store(_quad_multiply_add(builder, kind, builder.load(acc[r][h]), splat, b_vec[h]),
                                  acc[r][h])
        for r in range(rows_t):
            row = builder.add(c_off, builder.mul(const(r), c_stride_v))
            for h in range(vectors):
                ptr = builder.gep(c_data, [builder.add(row, const(lanes * h))])
                builder.store(builder.load(acc[r][h]), builder.bitcast(ptr, acc_t.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True)
def _gemm_bytes(isa: int, a: np.ndarray, flip: bool, panels: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    """out[g, i, j] = bias[j] + sum_k u(a[g, i, k]) * b[g, j, k] in int32, tile by tile (``isa`` a literal).

    ``a`` int16 [G, M, K] of bytes: signed with ``flip`` (each becomes a + 128), else already in [0, 255];
    ``panels`` from ``pack_bytes``; ``bias`` int32 [ceil(N / cols) * cols] (or G of them end to end) with the
    flip's 128 * column sums already taken out; ``out`` int32 [G, M, N].
    """
    literally(isa)
    tile_rows = TILE_ROWS[isa]
    n_cols = panels.shape[3] // 4
    g_count, m, k = a.shape
    n_blocks = panels.shape[1]
    k4 = panels.shape[2]
    n = out.shape[2]
    row_blocks = (m + tile_rows - 1) // tile_rows
    bias_stride = n_blocks * n_cols if bias.shape[0] > n_blocks * n_cols else 0
    offset = 128 if flip else 0
    # A task converts a group of row blocks and, one K chunk at a time, runs every column panel against the whole
    # group: a panel chunk is read from L2 once per group and then served from L1 (the group's quads of the chunk
    # and one panel chunk fit in L1_BYTES). Chunks after the first accumulate onto the partial sums in ``out``.
    # Groups stay small enough to leave several tasks per thread.
    kc = min(k4, K_CHUNK // 4)
    group = max(1, min((L1_BYTES - 4 * kc * n_cols) // (tile_rows * 4 * kc), (row_blocks + 31) // 32))
    groups = (row_blocks + group - 1) // group
    for task in prange(g_count * groups):
        g = task // groups
        first = (task % groups) * group * tile_rows
        rows = min(group * tile_rows, m - first)
        quads = np.zeros(group * tile_rows * k4 * 4, np.uint8)
        for r in range(rows):
            base = r * k4 * 4
            for p in range(k):
                quads[base + p] = np.uint8(a[g, first + r, p] + offset)
        a_quads = quads.view(np.int32)
        scratch = np.empty(tile_rows * n_cols, np.int32)
        for k0 in range(0, k4, kc):
            steps = min(kc, k4 - k0)
            for jb in range(n_blocks):
                j0 = jb * n_cols
                b_offset = ((g * n_blocks + jb) * k4 + k0) * 4 * n_cols
                full_cols = j0 + n_cols <= n
                for start in range(0, rows, tile_rows):
                    a_at = start * k4 + k0
                    c_row = (g * m + first + start) * n + j0
                    if start + tile_rows <= rows and full_cols:
                        if k0 == 0:
                            tile_dot_bytes(isa, a_quads, a_at, k4, panels, b_offset, steps,
                                           bias, g * bias_stride + j0, 0, out, c_row, n)
                        else:
                            tile_dot_bytes(isa, a_quads, a_at, k4, panels, b_offset, steps,
                                           out, c_row, n, out, c_row, n)
                    else:  # an edge tile: through the scratch tile, reloaded from out after the first chunk
                        live_rows, live_cols = min(tile_rows, rows - start), min(n_cols, n - j0)
                        if k0 == 0:
                            tile_dot_bytes(isa, a_quads, a_at, k4, panels, b_offset, steps,
                                           bias, g * bias_stride + j0, 0, scratch, 0, n_cols)
                        else:
                            for r in range(live_rows):
                                for c in range(live_cols):
                                    scratch[r * n_cols + c] = out[g, first + start + r, j0 + c]
                            tile_dot_bytes(isa, a_quads, a_at, k4, panels, b_offset, steps,
                                           scratch, 0, n_cols, scratch, 0, n_cols)
                        for r in range(live_rows):
                            for c in range(live_cols):
                                out[g, first + start + r, j0 + c] = scratch[r * n_cols + c]


# One entry point per instruction set, each compiled and cached on its own; they take no literal argument, so a call
# costs a plain dispatch (a literal ``isa`` argument at the Python boundary re-enters numba's typing on every call).
@njit(cache=True)
def gemm_bytes_vnni(a: np.ndarray, flip: bool, panels: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    _gemm_bytes(VNNI, a, flip, panels, bias, out)


@njit(cache=True)
def gemm_bytes_avx2(a: np.ndarray, flip: bool, panels: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    _gemm_bytes(AVX2, a, flip, panels, bias, out)


GEMM_BYTES = {VNNI: gemm_bytes_vnni, AVX2: gemm_bytes_avx2}


@njit(cache=True, parallel=True)
def _pack_panels(b: np.ndarray, panels: np.ndarray, sums: np.ndarray) -> None:
    """panels[g, jb, kk, 4c + t] = byte of b[g, jb * cols + c, 4kk + t] (zero past N and K); sums[g, n] = sum_k b."""
    g_count, n, k = b.shape
    n_blocks, k4, width = panels.shape[1], panels.shape[2], panels.shape[3]
    n_cols = width // 4
    for task in prange(g_count * n_blocks):
        g = task // n_blocks
        jb = task % n_blocks
        for c in range(n_cols):
            j = jb * n_cols + c
            total = 0
            for p in range(k4 * 4):
                v = np.int64(b[g, j, p]) if j < n and p < k else np.int64(0)
                panels[g, jb, p >> 2, 4 * c + (p & 3)] = np.uint8(v & 255)
                total += v
            if j < n:
                sums[g, j] = total


def pack_bytes(b: np.ndarray, isa: int, k_major: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(panels, column sums) of b[G, N, K] (or b[G, K, N] with ``k_major``) in [-128, 127] for the ``isa`` kernel:
    panels uint8 [G, ceil(N / cols), ceil(K / 4), 4 * cols] holding the signed bytes, sums int64 [G, N] of b over K."""
    n_cols = cols(isa)
    b = np.ascontiguousarray(b.transpose(0, 2, 1) if k_major else b)
    g, n, k = b.shape
    panels = np.empty((g, -(-n // n_cols), -(-k // 4), 4 * n_cols), np.uint8)
    sums = np.zeros((g, n), np.int64)
    _pack_panels(b, panels, sums)
    return panels, sums

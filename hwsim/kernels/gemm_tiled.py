"""Register-tiled int16 x int16 -> int32 GEMM: an LLVM-IR micro-kernel (``numba.extending.intrinsic``) and its driver.

Why IR: numba has no SIMD intrinsics, and LLVM's loop vectorizer lowers only a single reduction per loop to
``vpmaddwd``, so Python-source register tiles lose the vector unit (measured; see hwsim.kernels.gemm). Emitting the tile
directly keeps ``ROWS x 2`` vector accumulators in registers across the whole K loop, the classic BLIS/GotoBLAS
micro-kernel shape (Goto & van de Geijn, "Anatomy of high-performance matrix multiplication", ACM TOMS 2008), with
the integer multiply-add of x86's PMADDWD (Intel SDM, vol. 2: "Multiply and Add Packed Integers").

The IR is target-independent: ``sext`` both int16 vectors to int32, multiply, add the even and odd lanes. LLVM's x86
back end selects exactly this pattern as ``vpmaddwd`` (8 int32 lanes of a0*b0 + a1*b1 per instruction on AVX2); other
targets get their own lowering of the same integer arithmetic, so the result is bit-identical everywhere.

Operand layouts (built by hwsim.kernels.gemm):
  A  int32 view of int16 pairs, row-major: element [i, kk] holds (a[i, 2kk], a[i, 2kk+1]) (low half first);
  B  int16 panel [K2, 2 * COLS] for COLS output columns: entry [kk, 2c + t] = b[c, 2kk + t];
  C  int32, row-major with a caller-given row stride; the tile is ROWS x COLS.
Every int32 pair sum and accumulation is exact when the caller checked K * max|a| * max|b| < 2^31 (gemm does).

The driver lives in this file on purpose: numba's on-disk cache is keyed on the source file of the jitted function,
so keeping kernel and driver together means an edit to the IR always invalidates the cached machine code.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

ROWS = 4   # output rows per tile: 4 x 2 accumulators + 2 B vectors + 1 broadcast = 11 of AVX2's 16 vector registers
COLS = 16  # output columns per tile: two 8-lane int32 vectors
LANES = 8

_I16, _I32 = ir.IntType(16), ir.IntType(32)
_ACC = ir.VectorType(_I32, LANES)
_PAIRS = ir.VectorType(_I16, 2 * LANES)
_WIDE = ir.VectorType(_I32, 2 * LANES)
_EVEN = ir.Constant(_ACC, [2 * i for i in range(LANES)])
_ODD = ir.Constant(_ACC, [2 * i + 1 for i in range(LANES)])


def _multiply_add_pairs(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """<16 x i16> a, b -> <8 x i32> with lane l = a[2l] * b[2l] + a[2l+1] * b[2l+1] (PMADDWD's definition)."""
    prod = builder.mul(builder.sext(a, _WIDE), builder.sext(b, _WIDE))
    return builder.add(builder.shuffle_vector(prod, prod, _EVEN), builder.shuffle_vector(prod, prod, _ODD))


@intrinsic
def tile_dot(typingctx, a, a_offset, a_stride, b, b_offset, k2, bias, bias_offset, c, c_offset, c_stride):
    """C[c_offset + r * c_stride + j] = bias[bias_offset + j] + sum_kk A[a_offset + r * a_stride + kk] . B-pair(kk, j).

    ``a`` int32 pairs, ``b`` int16 panels (pair (kk, j) at b_offset + kk * 2 * COLS + 2j), ``bias`` and ``c`` int32
    (any dimensions, C-contiguous; offsets and strides count elements of each array's own dtype); r < ROWS, j < COLS,
    kk < k2.
    """
    sig = types.void(a, a_offset, a_stride, b, b_offset, k2, bias, bias_offset, c, c_offset, c_stride)

    def codegen(context, builder, signature, args):
        a_arr, a_off, a_stride_v, b_arr, b_off, k2_v, bias_arr, bias_off, c_arr, c_off, c_stride_v = args
        a_data = context.make_array(signature.args[0])(context, builder, a_arr).data
        b_data = context.make_array(signature.args[3])(context, builder, b_arr).data
        bias_data = context.make_array(signature.args[6])(context, builder, bias_arr).data
        c_data = context.make_array(signature.args[8])(context, builder, c_arr).data
        intp = a_off.type

        def const(v: int) -> ir.Constant:
            return ir.Constant(intp, v)

        # Accumulators start at the bias and live in allocas that LLVM's mem2reg promotes to registers for the loop.
        bias_vec = [builder.load(builder.bitcast(builder.gep(bias_data, [builder.add(bias_off, const(LANES * h))]),
                                                 _ACC.as_pointer()), align=4) for h in range(2)]
        acc = [[cgutils.alloca_once_value(builder, bias_vec[h]) for h in range(2)] for _ in range(ROWS)]
        row_offsets = [builder.add(a_off, builder.mul(const(r), a_stride_v)) for r in range(ROWS)]
        with cgutils.for_range(builder, k2_v) as loop:
            kk = loop.index
            panel = builder.add(b_off, builder.mul(kk, const(2 * COLS)))
            b_vec = [builder.load(builder.bitcast(builder.gep(b_data, [builder.add(panel, const(2 * LANES * h))]),
                                                  _PAIRS.as_pointer()), align=2) for h in range(2)]
            for r in range(ROWS):
                pair = builder.load(builder.gep(a_data, [builder.add(row_offsets[r], kk)]))
                splat = builder.shuffle_vector(builder.insert_element(ir.Constant(_ACC, ir.Undefined), pair, ir.Constant(_I32, 0)),
                                               ir.Constant(_ACC, ir.Undefined), ir.Constant(_ACC, None))
                a_vec = builder.bitcast(splat, _PAIRS)
                for h in range(2):
                    builder.store(builder.add(builder.load(acc[r][h]), _multiply_add_pairs(builder, a_vec, b_vec[h])), acc[r][h])
        for r in range(ROWS):
            row = builder.add(c_off, builder.mul(const(r), c_stride_v))
            for h in range(2):
                ptr = builder.gep(c_data, [builder.add(row, const(LANES * h))])
                builder.store(builder.load(acc[r][h]), builder.bitcast(ptr, _ACC.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, parallel=True)
def gemm_i32_tiled(a: np.ndarray, panels: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    """out[g, i, j] = bias[j] + sum_k a[g, i, k] * b[g, j, k] with int32 accumulation, tile by tile.

    ``a`` int32 pairs [G, Mp, K2] with Mp >= ROWS (rows past out's M are padding); ``panels`` int16
    [G, ceil(N / COLS), K2, 2 * COLS]; ``bias`` int32 [ceil(N / COLS) * COLS], or G such vectors end to end (a bias
    per group: grouped convolutions); ``out`` int32 [G, M, N]. Full tiles store straight into ``out``; edge tiles
    go through a scratch tile, and the last row block is shifted up to end at row M (its overlap is not stored twice).
    """
    g_count, mp, k2 = a.shape
    n_blocks = panels.shape[1]
    m, n = out.shape[1], out.shape[2]
    row_blocks = (m + ROWS - 1) // ROWS
    bias_stride = n_blocks * COLS if bias.shape[0] > n_blocks * COLS else 0
    for task in prange(g_count * row_blocks):
        g = task // row_blocks
        start = (task % row_blocks) * ROWS
        i0 = min(start, mp - ROWS)
        a_offset = (g * mp + i0) * k2
        scratch = np.empty(ROWS * COLS, np.int32)
        for jb in range(n_blocks):
            j0 = jb * COLS
            b_offset = (g * n_blocks + jb) * k2 * 2 * COLS
            if i0 == start and start + ROWS <= m and j0 + COLS <= n:
                tile_dot(a, a_offset, k2, panels, b_offset, k2, bias, g * bias_stride + j0, out, (g * m + start) * n + j0,
                         n)
            else:
                tile_dot(a, a_offset, k2, panels, b_offset, k2, bias, g * bias_stride + j0, scratch, 0, COLS)
                for r in range(start - i0, min(ROWS, m - i0)):
                    for c in range(min(COLS, n - j0)):
                        out[g, i0 + r, j0 + c] = scratch[r * COLS + c]

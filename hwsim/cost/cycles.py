"""Cycle model of rtl/src/gemm_engine.v, exact per tile (asserted against the RTL by the cocotb testbenches).

A tile computes an R x C block of out = A[M, K] x B[N, K]^T:
    1 clear cycle + (K_steps + R + C - 2) feed cycles (skewed operands meet in PE (i, j) at step k + i + j)
    + (R + 1) requant cycles (each latches one tile row into the C column shifters, writes the previous one)
    + 1 done cycle = K_steps + 2R + C + 1,   K_steps = ceil(K / 2) when both operands are <= 4 bits (two int4 MACs per PE), else K.
Partial edge tiles take the full schedule (zeros are fed). Tiles run one after another.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MODE_INT8 = 0
MODE_INT4X2 = 1
MODE_LOG2 = 2
MODE_LOG_SQRT2 = 3   # log-sqrt(2) codes x int8: a shift, and a shift-add by 181 for odd codes
MODE_TWIN = 4        # twin-uniform codes x int8: the int8 product shifted by m or 0 (the RTL's int8 mode, decode at the edge)
MODE_NAMES = {MODE_INT8: "int8", MODE_INT4X2: "int4x2", MODE_LOG2: "log2", MODE_LOG_SQRT2: "log_sqrt2",
              MODE_TWIN: "twin"}
PACKED_MAX_BITS = 4  # both operands at most this wide run two MACs per PE per cycle (int4x2)
ALL_MODES = ("int8", "int4x2", "log2", "log_sqrt2", "twin")  # the PE's datapaths (rtl/src/mac_pe.v parameters)


def log_decoded_bits(code_bits: int, sqrt2: bool = False) -> int:
    """Signed width of the integer a log code decodes to (hwsim.ops.gemm_ops): 2^(2^b - 2) for base 2,
    128 * 2^(2^(b-1) - 1) for base sqrt(2)."""
    return (1 << (code_bits - 1)) + 8 if sqrt2 else 1 << code_bits


def gemm_mode(a_bits: int, b_bits: int, a_log2: bool = False, a_sqrt2: bool = False) -> int:
    """PE mode for operand widths: log codes x int8, packed 2 x int4, or int8 (narrower values sign-extended)."""
    if a_log2:
        return MODE_LOG_SQRT2 if a_sqrt2 else MODE_LOG2
    return MODE_INT4X2 if a_bits <= 4 and b_bits <= 4 else MODE_INT8


def gemm_schedule(a_bits: int, b_bits: int, a_log2_bits: int = 0, pe_modes: tuple[str, ...] = ALL_MODES,
                  a_sqrt2: bool = False, a_twin_m: int = 0) -> tuple[int, int]:
    """(PE mode, passes) for signed operand widths on PEs that have ``pe_modes`` (a model-only extension of the RTL).

    A mode the PE lacks falls back to int8; an operand wider than 8 signed bits is split into bytes, so the GEMM runs
    ceil(a/8) * ceil(b/8) passes over the array (partial products shifted into the accumulator). Without the log2 mode
    a b-bit log code becomes its decoded integer (``log_decoded_bits``). A twin-uniform code (``a_bits`` signed bits,
    ratio 2^a_twin_m) runs in the twin mode when its magnitude fits the int8 operand, else as its decoded integer of
    a_bits + a_twin_m signed bits (hwsim.kernels.twin)."""
    if a_twin_m:
        if "twin" in pe_modes and a_bits <= 8:
            return MODE_TWIN, math.ceil(b_bits / 8)
        a_bits += a_twin_m
    if a_log2_bits:
        if ("log_sqrt2" if a_sqrt2 else "log2") in pe_modes:
            return (MODE_LOG_SQRT2 if a_sqrt2 else MODE_LOG2), math.ceil(b_bits / 8)
        a_bits = log_decoded_bits(a_log2_bits, a_sqrt2)
    if a_bits <= PACKED_MAX_BITS and b_bits <= PACKED_MAX_BITS and "int4x2" in pe_modes:
        return MODE_INT4X2, 1
    return MODE_INT8, math.ceil(a_bits / 8) * math.ceil(b_bits / 8)


def k_steps(k: int, mode: int) -> int:
    return (k + 1) // 2 if mode == MODE_INT4X2 else k


def gemm_tile_cycles(k: int, rows: int, cols: int, mode: int) -> int:
    """Cycles from start to done for one tile (see module docstring)."""
    return k_steps(k, mode) + 2 * rows + cols + 1


@dataclass(frozen=True)
class Tile:
    m0: int
    n0: int


def gemm_tiles(m: int, n: int, rows: int, cols: int) -> list[Tile]:
    """Tile origins in execution order (row-major over output blocks)."""
    return [Tile(m0, n0) for m0 in range(0, m, rows) for n0 in range(0, n, cols)]


def gemm_cycles(m: int, k: int, n: int, rows: int, cols: int, mode: int) -> int:
    """Cycles of a whole M x K x N GEMM on the array."""
    return len(gemm_tiles(m, n, rows, cols)) * gemm_tile_cycles(k, rows, cols, mode)


SOFTMAX_DIVIDE_CYCLES = 31  # rtl/src/softmax_unit.v: floor((2^31 - 1) / S), one quotient bit per cycle (twin codes)


def softmax_row_cycles(n: int, divide: bool = False) -> int:
    """rtl/src/softmax_unit.v: max pass, exponent pass and code pass of n cycles each, plus 1 to finish the row; the
    twin-uniform code's normalisation factor takes a 31-cycle division between the exponent and code passes."""
    return 3 * n + 1 + (SOFTMAX_DIVIDE_CYCLES if divide else 0)


GELU_PIPELINE_DEPTH = 17  # rtl/src/gelu_unit.v: stage 0 (z, exponential), 16 divider stages, the product's write


def gelu_row_cycles(n: int) -> int:
    """rtl/src/gelu_unit.v: n feed cycles (one element per cycle), GELU_PIPELINE_DEPTH cycles until the last product
    is written, and 1 to finish the row."""
    return n + GELU_PIPELINE_DEPTH + 1


def ws_tile_cycles(m: int, rows: int, cols: int) -> int:
    """Weight-stationary (model only): load a rows x cols weight block (rows cycles), stream m skewed A rows through
    it (m + rows + cols - 2), one done cycle."""
    return rows + m + rows + cols - 1


def layernorm_row_cycles(c: int) -> int:
    """rtl/src/layernorm_unit.v: three passes over c channels, two 48-step divisions and a 32-step square root, each
    followed by one commit cycle, and 1 cycle to finish the row."""
    return 3 * c + 133

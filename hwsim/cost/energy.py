"""Energy of a GEMM on the array from counted activity, priced with the 45 nm table (Horowitz, ISSCC 2014).

Counted for rtl/src/gemm_engine.v's output-stationary schedule, summed over its tiles in closed form:
multiply-accumulates by operand width (a log2 operand costs a shift instead of a multiply; PTF factors cost a product
shift), SRAM reads of A and B (each operand row or column read once per tile that uses it, so A is read once per
column block and B once per row block), bias and shift reads, requant adds and shifts in the column shifters, and
accumulator and output writes, in 64-bit SRAM words priced by the size of the buffer they hit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.arch import EnergyTable, MemoryConfig
from hwsim.cost.cycles import MODE_LOG2, MODE_LOG_SQRT2


@dataclass(frozen=True)
class GemmActivity:
    macs: int
    a_bits: int
    b_bits: int
    log2: bool
    sqrt2: bool
    ptf_shifts: int
    a_read_bits: int
    b_read_bits: int
    param_read_bits: int
    write_bits: int
    requants: int
    acc_bits: int


def gemm_activity(m: int, n: int, k: int, rows: int, cols: int, a_bits: int, b_bits: int, mode: int,
                  ptf_nonzero: int = 0, acc_bits: int = 32, out_bits: int = 16, requant: bool = True) -> GemmActivity:
    """Activity of an M x K x N GEMM tiled R x C; ``ptf_nonzero`` = reduction indices whose PTF shift is non-zero."""
    row_blocks, col_blocks = math.ceil(m / rows), math.ceil(n / cols)
    return GemmActivity(macs=m * n * k, a_bits=a_bits, b_bits=b_bits, log2=mode in (MODE_LOG2, MODE_LOG_SQRT2),
                        sqrt2=mode == MODE_LOG_SQRT2,
                        ptf_shifts=m * n * ptf_nonzero, a_read_bits=m * k * a_bits * col_blocks,
                        b_read_bits=n * k * b_bits * row_blocks, param_read_bits=n * (acc_bits + 8) * row_blocks,
                        write_bits=m * n * (out_bits + acc_bits), requants=m * n if requant else 0, acc_bits=acc_bits)


def gemm_energy_pj(act: GemmActivity, table: EnergyTable, memory: MemoryConfig | None = None) -> dict[str, float]:
    """Energy breakdown (pJ) of a GEMM: multiply, accumulate (with PTF shifts), requant, sram; ``total`` sums them."""
    memory = memory or MemoryConfig()
    mult = act.macs * (table.shift(act.acc_bits) if act.log2 else table.mult(act.a_bits, act.b_bits))
    if act.sqrt2:  # odd log-sqrt(2) codes (about half) add four shifted copies: 181 = 10110101b
        mult += act.macs * 2 * table.add(act.acc_bits)
    words = lambda bits: math.ceil(bits / 64)  # noqa: E731
    parts = {
        "multiply": mult,
        "accumulate": act.macs * table.add(act.acc_bits) + act.ptf_shifts * table.shift(act.acc_bits),
        "requant": act.requants * (2 * table.add(act.acc_bits) + table.shift(act.acc_bits)),
        "sram": (words(act.a_read_bits) * table.sram_access(memory.a_kb)
                 + words(act.b_read_bits + act.param_read_bits) * table.sram_access(memory.b_kb)
                 + words(act.write_bits) * table.sram_access(memory.out_kb)),
    }
    parts["total"] = sum(parts.values())
    return parts

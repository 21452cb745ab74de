"""Energy of a GEMM tile from counted activity, priced with the 45 nm table (Horowitz, ISSCC 2014, 45 nm).

Counted per tile of rtl/src/gemm_engine.v: multiply-accumulates by operand width (log2 operands cost a shift
instead of a multiply; PTF factors cost a product shift), buffer reads of A and B (each operand read once per tile),
accumulator bias adds, requant shifts and output writes, in 64-bit SRAM words.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.arch import EnergyTable
from hwsim.cost.cycles import MODE_LOG2


@dataclass(frozen=True)
class TileActivity:
    macs: int
    a_bits: int
    b_bits: int
    log2: bool
    ptf_shifts: int
    sram_read_bits: int
    sram_write_bits: int
    requants: int
    acc_bits: int
    out_bits: int


def tile_activity(m: int, n: int, k: int, m0: int, n0: int, rows: int, cols: int, a_bits: int, b_bits: int, mode: int,
                  ptf_nonzero: int, acc_bits: int = 32, out_bits: int = 16) -> TileActivity:
    """Activity of the tile at (m0, n0); ``ptf_nonzero`` = reduction indices whose PTF shift is non-zero."""
    vr, vc = min(rows, m - m0), min(cols, n - n0)
    return TileActivity(macs=vr * vc * k, a_bits=a_bits, b_bits=b_bits, log2=mode == MODE_LOG2,
                        ptf_shifts=vr * vc * ptf_nonzero, sram_read_bits=(vr * a_bits + vc * b_bits) * k + vc * (acc_bits + 8),
                        sram_write_bits=vr * vc * (out_bits + acc_bits), requants=vr * vc, acc_bits=acc_bits, out_bits=out_bits)


def tile_energy_pj(act: TileActivity, table: EnergyTable) -> dict[str, float]:
    """Energy breakdown (pJ) of one tile; ``total`` sums the parts."""
    mult = act.macs * (table.shift_pj_per_bit * act.acc_bits if act.log2 else table.mult(act.a_bits, act.b_bits))
    parts = {
        "multiply": mult,
        "accumulate": act.macs * table.add(act.acc_bits),
        "ptf_shift": act.ptf_shifts * table.shift_pj_per_bit * act.acc_bits,
        "requant": act.requants * (2 * table.add(act.acc_bits) + table.shift_pj_per_bit * act.acc_bits),
        "sram": (math.ceil(act.sram_read_bits / 64) + math.ceil(act.sram_write_bits / 64)) * table.sram_64b_access_pj,
    }
    parts["total"] = sum(parts.values())
    return parts

"""Cycle and energy models, and the hardware config loader (the RTL equality itself is in tests/rtl)."""
from __future__ import annotations

import pytest

from hwsim.arch import load_config
from hwsim.cost.cycles import MODE_INT4X2, MODE_INT8, MODE_LOG2, gemm_cycles, gemm_mode, gemm_tile_cycles, gemm_tiles
from hwsim.cost.energy import tile_activity, tile_energy_pj


def test_tile_cycles_by_hand():
    # 1 clear + (K + R + C - 2) feed + (R + 1) requant + 1 done
    assert gemm_tile_cycles(64, 8, 8, MODE_INT8) == 1 + (64 + 14) + 9 + 1
    assert gemm_tile_cycles(65, 8, 8, MODE_INT4X2) == gemm_tile_cycles(33, 8, 8, MODE_INT8)
    assert gemm_cycles(50, 64, 192, 8, 8, MODE_INT8) == 7 * 24 * gemm_tile_cycles(64, 8, 8, MODE_INT8)


def test_modes():
    assert gemm_mode(8, 8) == MODE_INT8 and gemm_mode(4, 8) == MODE_INT8
    assert gemm_mode(4, 4) == MODE_INT4X2 and gemm_mode(4, 8, a_log2=True) == MODE_LOG2


def test_tiles_cover_every_output_once():
    covered = set()
    for t in gemm_tiles(50, 37, 8, 16):
        block = {(m, n) for m in range(t.m0, min(t.m0 + 8, 50)) for n in range(t.n0, min(t.n0 + 16, 37))}
        assert not covered & block
        covered |= block
    assert len(covered) == 50 * 37


def test_energy_counts_and_scales():
    table = load_config().energy
    e8 = tile_energy_pj(tile_activity(8, 8, 64, 0, 0, 8, 8, 8, 8, MODE_INT8, 0), table)
    e4 = tile_energy_pj(tile_activity(8, 8, 64, 0, 0, 8, 8, 4, 4, MODE_INT4X2, 0), table)
    assert e8["multiply"] == pytest.approx(8 * 8 * 64 * 0.2)  # 4096 int8 multiplies at 0.2 pJ
    assert e4["multiply"] == pytest.approx(e8["multiply"] / 4)
    assert e8["total"] == pytest.approx(sum(v for k, v in e8.items() if k != "total"))
    edge = tile_activity(10, 8, 64, 8, 0, 8, 8, 8, 8, MODE_INT8, 0)
    assert edge.macs == 2 * 8 * 64  # only the two valid rows of an edge tile


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(rows=8, cols=4)
    assert (cfg.array.rows, cfg.array.cols) == (8, 4) and cfg.energy.mult(8, 8) == pytest.approx(0.2)
    bad = tmp_path / "hw.yaml"
    bad.write_text("array: {rows: 8, colums: 8}\n")
    with pytest.raises(ValueError, match="colums"):
        load_config(bad)
    with pytest.raises(ValueError, match="outside"):
        load_config(rows=0)

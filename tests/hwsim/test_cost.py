"""The cost model on programs small enough to price by hand, and the hardware config loader. The RTL equality of tile
and unit-row cycles (and of whole ops) is in tests/rtl."""
from __future__ import annotations

import numpy as np
import pytest

from hwsim.arch import ConfigError, load_hardware, presets
from hwsim.cost import cost
from hwsim.cost.cycles import MODE_INT4X2, MODE_INT8, MODE_LOG2, gemm_schedule, gemm_tile_cycles
from hwsim.cost.pricing import CostError
from hwsim.ir import Op, Program, TensorSpec, validate

SMALL = {"array.rows": 8, "array.cols": 8, "memory.double_buffer": False, "memory.dram_bytes_per_cycle": 4,
         "memory.act_kb": 0}


def linear_program(a_bits: int = 8, w_bits: int = 8, residual: bool = False) -> Program:
    """x [20, 40] -> Linear (24 outputs, 32-bit bias) -> Requant -> h int8 [-> Add(h, h) -> out]."""
    rng = np.random.default_rng(0)
    tensors = {"x": TensorSpec((20, 40), a_bits, True, exp=-4),
               "w": TensorSpec((24, 40), w_bits, True, exp=-3, constant=True),
               "b": TensorSpec((24,), 32, True, constant=True), "s": TensorSpec((1,), 8, True, constant=True),
               "acc": TensorSpec((20, 24), 32, True), "h": TensorSpec((20, 24), 8, True, exp=-2)}
    lim = 2 ** (w_bits - 1)
    constants = {"w": rng.integers(-lim, lim, (24, 40)), "b": np.zeros(24, np.int64), "s": np.array([6])}
    ops = [Op("Linear", "fc", ("x",), ("acc",), {"weight": "w", "bias": "b"}, {"acc_bits": 32}),
           Op("Requant", "fc.requant", ("acc",), ("h",), {"shift": "s"}, {"mode": "shift", "axis": -1})]
    outputs = ["h"]
    if residual:
        tensors["out"] = TensorSpec((20, 24), 9, True, exp=-2)
        ops.append(Op("Add", "add", ("h", "h"), ("out",), attrs={"shift_a": 0, "shift_b": 0}))
        outputs = ["out"]
    p = Program("linear", ["x"], outputs, tensors, ops, constants)
    validate(p)
    return p


def test_tile_cycles_by_hand():
    # 1 clear + (K + R + C - 2) feed + (R + 1) requant + 1 done
    assert gemm_tile_cycles(64, 8, 8, MODE_INT8) == 1 + (64 + 14) + 9 + 1
    assert gemm_tile_cycles(65, 8, 8, MODE_INT4X2) == gemm_tile_cycles(33, 8, 8, MODE_INT8)


def test_pe_mode_and_passes_follow_the_pe_capabilities():
    assert gemm_schedule(8, 8) == (MODE_INT8, 1) and gemm_schedule(4, 8) == (MODE_INT8, 1)
    assert gemm_schedule(4, 4) == (MODE_INT4X2, 1) and gemm_schedule(4, 4, pe_modes=("int8",)) == (MODE_INT8, 1)
    assert gemm_schedule(0, 8, a_log2_bits=4) == (MODE_LOG2, 1)
    assert gemm_schedule(0, 8, a_log2_bits=4, pe_modes=("int8",)) == (MODE_INT8, 2)  # 2^14 needs 16 signed bits
    assert gemm_schedule(12, 8) == (MODE_INT8, 2) and gemm_schedule(16, 16) == (MODE_INT8, 4)


def test_a_linear_layer_priced_by_hand():
    c = cost(linear_program(), load_hardware(None, SMALL))
    fc, rq = c.ops
    # 3 x 3 tiles of 40 + 2*8 + 8 + 1 cycles; reads x 800 B, weights 960 B, bias 96 B; writes h at 8 bits, 480 B
    assert fc.compute_cycles == 9 * 65 == 585
    assert (fc.dram_read_bytes, fc.dram_write_bytes) == (800 + 960 + 96, 480)
    assert fc.cycles == 585 + (1856 + 480) // 4  # no double buffering: transfers then compute
    assert fc.macs == 20 * 24 * 40 and fc.energy_pj["multiply"] == pytest.approx(19200 * 0.2)
    assert fc.energy_pj["dram"] == pytest.approx(8 * 2336 * 20.0)
    assert rq.unit == "fused" and rq.cycles == 0 and rq.energy_total_pj == 0  # in the column shifters
    assert c.cycles == fc.cycles and c.dram_bytes == 2336


def test_double_buffering_overlaps_all_but_the_first_panels():
    fc = cost(linear_program(), load_hardware(None, {**SMALL, "memory.double_buffer": True})).ops[0]
    # first A and B panels (8 x 40 bytes each) load before compute; the rest (1696 B = 424 cycles) hides under 585
    assert fc.cycles == 640 // 4 + 585 and fc.stall_cycles == 160


def test_weights_that_do_not_fit_are_reloaded_per_row_block():
    fc = cost(linear_program(), load_hardware(None, {**SMALL, "memory.b_kb": 0.5})).ops[0]
    assert fc.dram_read_bytes == 800 + 3 * (960 + 96)


def test_an_activation_that_fits_stays_on_chip():
    program = linear_program(residual=True)
    through_dram = cost(program, load_hardware(None, SMALL))
    on_chip = cost(program, load_hardware(None, {**SMALL, "memory.act_kb": 4}))
    # h (480 B) is written by fc and read twice by the add only when it lives in DRAM
    assert through_dram.dram_bytes - on_chip.dram_bytes == 480 + 2 * 480
    assert on_chip.ops[2].dram_write_bytes == 20 * 24 * 9 // 8  # the program output always goes to DRAM


def test_narrow_operands_use_the_packed_mode_and_move_fewer_bytes():
    hw = load_hardware(None, SMALL)
    w8, w4 = cost(linear_program(8, 8), hw).ops[0], cost(linear_program(4, 4), hw).ops[0]
    assert w4.compute_cycles == 9 * gemm_tile_cycles(40, 8, 8, MODE_INT4X2) < w8.compute_cycles
    assert w8.dram_read_bytes - w4.dram_read_bytes == (800 + 960) // 2
    int8_only = cost(linear_program(4, 4), load_hardware(None, {**SMALL, "array.pe_modes": ["int8"]})).ops[0]
    assert int8_only.compute_cycles == w8.compute_cycles
    wide = cost(linear_program(12, 8), hw).ops[0]
    assert wide.compute_cycles == 2 * w8.compute_cycles and wide.mode == "int8x2"


def test_a_buffer_too_small_for_one_tile_is_one_clear_error():
    with pytest.raises(CostError, match=r"op 'fc': one A panel .* does not fit the 0.25 KB buffer"):
        cost(linear_program(), load_hardware(None, {**SMALL, "memory.a_kb": 0.25}))


def test_real_programs_scale_with_bits_and_hardware(p2vit_programs):
    w8, w4 = p2vit_programs[(8, 8)], p2vit_programs[(4, 4)]
    hw = load_hardware("16x16")
    c8, c4 = cost(w8, hw), cost(w4, hw)
    assert c4.by_unit()["array"] < c8.by_unit()["array"] and c4.dram_bytes < c8.dram_bytes
    assert c4.energy_pj["multiply"] < c8.energy_pj["multiply"] / 2
    big = cost(w8, load_hardware("32x32"))
    assert big.by_unit()["array"] < c8.by_unit()["array"] and big.cycles < c8.cycles
    slow_dram = cost(w8, load_hardware("16x16", {"memory.dram_bytes_per_cycle": 0.25}))
    assert slow_dram.compute_cycles == c8.compute_cycles and slow_dram.cycles > c8.cycles
    every_op = {op.name for op in w8.ops}
    assert {o.name for o in c8.ops} == every_op and all(o.cycles >= o.compute_cycles >= 0 for o in c8.ops)


def test_presets_and_overrides():
    assert {"edge-8x8", "16x16", "32x32"} <= set(presets())
    edge = load_hardware("edge-8x8")
    assert (edge.array.rows, edge.clock_mhz) == (8, 200)
    hw = load_hardware("16x16", ["array.rows=4", "memory.double_buffer=false", "energy.mult_int8_pj=0.4"])
    assert hw.array.rows == 4 and not hw.memory.double_buffer and hw.energy.mult(8, 8) == pytest.approx(0.4)


@pytest.mark.parametrize("override,message", [
    (["array.colums=8"], r"array: unknown keys \['colums'\]"),
    (["memory.dram_bytes_per_cycle=0"], "dram_bytes_per_cycle = 0.0 must be > 0"),
    (["array.rows=eight"], "array.rows = 'eight': want int"),
    (["array.pe_modes=[int4x2]"], "must include 'int8'"),
    (["units.gelu=0"], "units.gelu = 0 outside"),
    (["rows"], "want section.field=value"),
])
def test_bad_hardware_is_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_hardware("16x16", override)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="neither a preset"):
        load_hardware("64x64")
    bad = tmp_path / "hw.yaml"
    bad.write_text("array: {rows: 8, colums: 8}\n")
    with pytest.raises(ConfigError, match="colums"):
        load_hardware(bad)


def test_area_follows_the_array_and_the_pe_modes():
    from hwsim.cost.area import area_um2

    base = area_um2(load_hardware("16x16"))
    wide = area_um2(load_hardware("16x16", {"array.cols": 32}))
    lean = area_um2(load_hardware("16x16", {"array.pe_modes": ["int8"]}))
    assert wide["array"] == pytest.approx(2 * base["array"]) and wide["requant"] == pytest.approx(2 * base["requant"])
    assert lean["array"] < base["array"] and lean["softmax"] == base["softmax"]
    twin = area_um2(load_hardware("16x16", {"array.pe_modes": ["int8", "int4x2", "log2", "twin"]}))
    assert twin["array"] > base["array"] and twin["softmax"] > base["softmax"]  # product shifter; the divider
    assert base["total"] == pytest.approx(sum(v for k, v in base.items() if k != "total"))


@pytest.mark.parametrize("target", [(4, 4), "mixed"])
def test_a_rebitted_program_prices_as_the_program_lowered_at_those_bits(p2vit_programs, target):
    """Uniform W4A4, and a mixed map where one stored tensor is read at two widths (the stored width and the
    converter Requants must follow the lowering's rule, else the per-op cycles and DRAM bytes differ)."""
    from hwsim.cost.rebit import with_bits

    w8, lowered_program = p2vit_programs[(8, 8)], p2vit_programs[target]
    hw = load_hardware("edge-8x8")
    rebitted, lowered = cost(with_bits(w8, lowered_program.metadata["bits"]), hw), cost(lowered_program, hw)

    def priced(c):  # layout views cost nothing; the lowering keeps a K^T view the rebit folds into the MatMul
        return [(o.name, o.cycles, o.dram_read_bytes, o.dram_write_bytes, o.mode) for o in c.ops if o.unit != "layout"]

    assert priced(rebitted) == priced(lowered)
    assert rebitted.energy_uj == pytest.approx(lowered.energy_uj, rel=0.02)  # PTF shift counts differ slightly
    with pytest.raises(KeyError, match="no layers"):
        with_bits(w8, {"blocks.0.attn.qkvv": {"wbits": 4}})
    if target == "mixed":
        with pytest.raises(ValueError, match="uniform map"):
            with_bits(lowered_program, {})

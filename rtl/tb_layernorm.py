"""cocotb testbench of rtl/src/layernorm_unit.v: real LayerNorm rows, expected outputs and cycles from hwsim."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import cocotb

from hwsim.cost.cycles import layernorm_row_cycles
from rtl._cocotb import load_run_dump, unit_rows_result
from rtl.hexfile import read_hex, write_hex


@cocotb.test()
async def layernorm_rows_match_hwsim(dut) -> None:
    manifest = json.loads(Path(os.environ["VITSIM_RTL_MANIFEST"]).read_text())
    data = dict(np.load(manifest["npz"]))
    rows, c = data["x"].shape
    write_hex(Path("x.hex"), data["x"], 16)
    write_hex(Path("gamma.hex"), data["gamma"], 16)
    write_hex(Path("beta.hex"), data["beta"], 64)
    write_hex(Path("shift.hex"), data["shift"], 8)
    dut.c.value, dut.rows.value, dut.qmin.value, dut.qmax.value = c, rows, manifest["qmin"], manifest["qmax"]
    await load_run_dump(dut)
    out = read_hex(Path("out.hex"), 16, rows * c).reshape(rows, c)
    cycles = read_hex(Path("rows.hex"), 33, rows)
    result = unit_rows_result(manifest, data, out, cycles, data["out"], layernorm_row_cycles(c))
    assert result["bit_exact"] and result["cycles_equal_per_row"], result

"""cocotb testbench of rtl/src/gelu_unit.v: GELU (or, with the manifest's ``silu``, SiLU) rows, expected products and
cycles from hwsim."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import cocotb

from hwsim.cost.cycles import gelu_row_cycles
from rtl._cocotb import load_run_dump, unit_rows_result
from rtl.hexfile import read_hex, write_hex


@cocotb.test()
async def gelu_rows_match_hwsim(dut) -> None:
    manifest = json.loads(Path(os.environ["VITSIM_RTL_MANIFEST"]).read_text())
    data = dict(np.load(manifest["npz"]))
    rows, n = data["x"].shape
    write_hex(Path("x.hex"), data["x"], 16)
    dut.n.value, dut.rows.value = n, rows
    dut.frac.value, dut.sig_bits.value = manifest["frac_bits"], manifest["sig_bits"]
    dut.silu.value = int(manifest.get("silu", False))
    await load_run_dump(dut)
    out = read_hex(Path("out.hex"), 32, rows * n).reshape(rows, n)
    cycles = read_hex(Path("rows.hex"), 33, rows)
    result = unit_rows_result(manifest, data, out, cycles, data["out"], gelu_row_cycles(n))
    assert result["bit_exact"] and result["cycles_equal_per_row"], result

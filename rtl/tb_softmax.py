"""cocotb testbench of rtl/src/softmax_unit.v: real attention rows, expected log2, log-sqrt(2) or twin-uniform codes
and cycles from hwsim."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import cocotb

from hwsim.cost.cycles import softmax_row_cycles
from rtl._cocotb import load_run_dump, unit_rows_result
from rtl.hexfile import read_hex, write_hex


@cocotb.test()
async def softmax_rows_match_hwsim(dut) -> None:
    manifest = json.loads(Path(os.environ["VITSIM_RTL_MANIFEST"]).read_text())
    data = dict(np.load(manifest["npz"]))
    rows, n = data["x"].shape
    write_hex(Path("x.hex"), data["x"], 16)
    dut.n.value, dut.rows.value, dut.frac.value = n, rows, manifest["frac_bits"]
    dut.sqrt2.value, dut.eta.value = int(manifest.get("sqrt2", False)), int(manifest.get("eta", 0))
    twin_m = int(manifest.get("twin_m", 0))
    dut.twin_m.value, dut.bits.value = twin_m, int(manifest.get("bits", 4))
    await load_run_dump(dut)
    codes = read_hex(Path("out.hex"), 9, rows * n).reshape(rows, n)  # codes of up to 8 bits, read unsigned
    cycles = read_hex(Path("rows.hex"), 33, rows)
    result = unit_rows_result(manifest, data, codes, cycles, data["codes"], softmax_row_cycles(n, bool(twin_m)))
    assert result["bit_exact"] and result["cycles_equal_per_row"], result

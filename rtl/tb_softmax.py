"""cocotb testbench of rtl/src/softmax_unit.v: real attention rows, expected codes and cycles from hwsim."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from hwsim.cost.cycles import softmax_row_cycles
from rtl.tb_gemm import read_hex, write_hex


@cocotb.test()
async def softmax_rows_match_hwsim(dut) -> None:
    manifest = json.loads(Path(os.environ["VITSIM_RTL_MANIFEST"]).read_text())
    data = dict(np.load(manifest["npz"]))
    rows, n = data["x"].shape
    write_hex(Path("x.hex"), data["x"], 16)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value, dut.load.value, dut.dump.value, dut.run.value = 1, 0, 0, 0
    dut.n.value, dut.rows.value, dut.frac.value = n, rows, manifest["frac_bits"]
    await RisingEdge(dut.clk)
    dut.rst.value, dut.load.value = 0, 1
    await RisingEdge(dut.clk)
    dut.load.value, dut.run.value = 0, 1
    await RisingEdge(dut.clk)
    dut.run.value = 0
    await RisingEdge(dut.done)
    dut.dump.value = 1
    await RisingEdge(dut.clk)
    dut.dump.value = 0
    await RisingEdge(dut.clk)
    codes = read_hex(Path("out.hex"), 5, rows * n).reshape(rows, n)  # 4-bit codes, read unsigned
    cycles = read_hex(Path("rows.hex"), 33, rows)
    bad = np.argwhere(codes != data["codes"])
    result = {"name": manifest["name"], "rows": rows, "n": n, "bit_exact": len(bad) == 0, "mismatches": int(len(bad)),
              "first_mismatch": None if not len(bad) else {"index": [int(v) for v in bad[0]],
                                                           "rtl": int(codes[tuple(bad[0])]), "hwsim": int(data["codes"][tuple(bad[0])])},
              "rtl_cycles": int(cycles.sum()), "model_cycles": softmax_row_cycles(n) * rows,
              "cycles_equal_per_row": bool((cycles == softmax_row_cycles(n)).all())}
    Path(manifest["results"]).write_text(json.dumps(result))
    assert result["bit_exact"] and result["cycles_equal_per_row"], result

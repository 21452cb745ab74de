"""cocotb testbench of rtl/src/gelu_unit.v: GELU rows, expected products and cycles from hwsim."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import cocotb

from hwsim.cost.cycles import gelu_row_cycles
from rtl._cocotb import load_run_dump
from rtl.tb_gemm import read_hex, write_hex


@cocotb.test()
async def gelu_rows_match_hwsim(dut) -> None:
    manifest = json.loads(Path(os.environ["VITSIM_RTL_MANIFEST"]).read_text())
    data = dict(np.load(manifest["npz"]))
    rows, n = data["x"].shape
    write_hex(Path("x.hex"), data["x"], 16)
    dut.n.value, dut.rows.value = n, rows
    dut.frac.value, dut.sig_bits.value = manifest["frac_bits"], manifest["sig_bits"]
    await load_run_dump(dut)
    out = read_hex(Path("out.hex"), 32, rows * n).reshape(rows, n)
    cycles = read_hex(Path("rows.hex"), 33, rows)
    bad = np.argwhere(out != data["out"])
    result = {"name": manifest["name"], "rows": rows, "n": n, "bit_exact": len(bad) == 0, "mismatches": int(len(bad)),
              "first_mismatch": None if not len(bad) else {"index": [int(v) for v in bad[0]],
                                                           "x": int(data["x"][tuple(bad[0])]),
                                                           "rtl": int(out[tuple(bad[0])]), "hwsim": int(data["out"][tuple(bad[0])])},
              "rtl_cycles": int(cycles.sum()), "model_cycles": gelu_row_cycles(n) * rows,
              "cycles_equal_per_row": bool((cycles == gelu_row_cycles(n)).all())}
    Path(manifest["results"]).write_text(json.dumps(result))
    assert result["bit_exact"] and result["cycles_equal_per_row"], result

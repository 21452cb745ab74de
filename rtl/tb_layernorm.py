"""cocotb testbench of rtl/src/layernorm_unit.v: real LayerNorm rows, expected outputs and cycles from hwsim."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import cocotb

from hwsim.cost.cycles import layernorm_row_cycles
from rtl._cocotb import load_run_dump
from rtl.tb_gemm import read_hex, write_hex


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
    bad = np.argwhere(out != data["out"])
    result = {"name": manifest["name"], "rows": rows, "c": c, "bit_exact": len(bad) == 0, "mismatches": int(len(bad)),
              "first_mismatch": None if not len(bad) else {"index": [int(v) for v in bad[0]],
                                                           "rtl": int(out[tuple(bad[0])]), "hwsim": int(data["out"][tuple(bad[0])])},
              "rtl_cycles": int(cycles.sum()), "model_cycles": layernorm_row_cycles(c) * rows,
              "cycles_equal_per_row": bool((cycles == layernorm_row_cycles(c)).all())}
    Path(manifest["results"]).write_text(json.dumps(result))
    assert result["bit_exact"] and result["cycles_equal_per_row"], result

"""Shared cocotb steps for the buffer-driven units (pe_harness, softmax_unit, layernorm_unit, gelu_unit): clock and
reset, `load` the hex buffers, pulse the run signal, wait for `done`, `dump` the result buffers; and the per-row
comparison of a unit's outputs and cycles with hwsim's, written where the runner reads it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

import cocotb


def start_clock(dut) -> None:
    """A 10 ns clock on ``dut.clk``: cocotb's C++ clock on Verilator (no Python per edge: several times the simulated
    cycles per second there), its Python clock elsewhere (on Icarus the C++ clock's edges can land in the same time
    step as a testbench write in either order, which shifts a pulse by a cycle)."""
    impl = "gpi" if "verilator" in cocotb.SIM_NAME.lower() else "py"
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl=impl).start())


async def load_run_dump(dut, run_signal: str = "run") -> None:
    start_clock(dut)
    dut.rst.value, dut.load.value, dut.dump.value = 1, 0, 0
    if hasattr(dut, "host_we"):  # the units' host port stays idle: files load the buffers
        dut.host_we.value, dut.host_addr.value, dut.host_wdata.value = 0, 0, 0
        if hasattr(dut, "host_sel"):
            dut.host_sel.value = 0
    getattr(dut, run_signal).value = 0
    await RisingEdge(dut.clk)
    dut.rst.value, dut.load.value = 0, 1
    await RisingEdge(dut.clk)
    dut.load.value = 0
    getattr(dut, run_signal).value = 1
    await RisingEdge(dut.clk)
    getattr(dut, run_signal).value = 0
    await RisingEdge(dut.done)
    dut.dump.value = 1
    await RisingEdge(dut.clk)
    dut.dump.value = 0
    await RisingEdge(dut.clk)


def unit_rows_result(manifest: dict, data: dict, out: np.ndarray, cycles: np.ndarray, expected: np.ndarray,
                     row_cycles: int) -> dict:
    """Compare a unit's ``out`` [rows, n] and per-row ``cycles`` with hwsim's ``expected`` and the model's
    ``row_cycles``; write the result to the manifest's results file and return it."""
    rows, n = expected.shape
    bad = np.argwhere(out != expected)
    first = None
    if len(bad):
        at = tuple(bad[0])
        first = {"index": [int(v) for v in at], "x": int(data["x"][at]), "rtl": int(out[at]), "hwsim": int(expected[at])}
    result = {"name": manifest["name"], "rows": rows, "n": n, "bit_exact": len(bad) == 0, "mismatches": int(len(bad)),
              "first_mismatch": first, "rtl_cycles": int(cycles.sum()), "model_cycles": row_cycles * rows,
              "cycles_equal_per_row": bool((cycles == row_cycles).all())}
    Path(manifest["results"]).write_text(json.dumps(result))
    return result

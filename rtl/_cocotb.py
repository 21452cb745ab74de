"""Shared cocotb steps for the buffer-driven units (pe_harness, softmax_unit, layernorm_unit): clock and reset,
`load` the hex buffers, pulse the run signal, wait for `done`, `dump` the result buffers."""
from __future__ import annotations

from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

import cocotb


async def load_run_dump(dut, run_signal: str = "run") -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
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

"""cocotb testbench of rtl/src/gemm_engine.v: every expected value and cycle count comes from hwsim.

The runner (rtl.runner) writes a manifest of jobs (operands and hwsim's expected accumulators and outputs, as .npz).
For each job the TB writes the buffers as hex files, pulses ``load``, pulses ``run_layer`` (the engine runs every tile
back to back, each start-to-done), dumps the output buffers and the per-tile cycle counts, and compares them with
hwsim's outputs and hwsim.cost.cycles.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

import cocotb
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time

from hwsim.cost.cycles import MODE_INT8, MODE_TWIN, gemm_tile_cycles, gemm_tiles
from rtl._cocotb import start_clock
from rtl.coverage import sample_gemm_job
from rtl.hexfile import read_hex, write_hex


class GemmTB:
    """Clock, reset, load, start, wait for done, read back."""

    def __init__(self, dut, rows: int, cols: int) -> None:
        self.dut, self.rows, self.cols = dut, rows, cols
        self.acc_w = int(dut.ACC_W.value)
        self.out_w = int(dut.OUT_W.value)

    async def reset(self) -> None:
        start_clock(self.dut)
        for sig in ("start", "run_layer", "load", "dump", "wr_en"):
            getattr(self.dut, sig).value = 0
        self.dut.rst.value = 1
        await RisingEdge(self.dut.clk)
        await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def pulse(self, name: str) -> None:
        getattr(self.dut, name).value = 1
        await RisingEdge(self.dut.clk)
        getattr(self.dut, name).value = 0

    async def load(self, job: dict, data: dict) -> None:
        m, k = data["a"].shape
        n = data["b"].shape[0]
        write_hex(Path("a.hex"), data["a"], 8)
        write_hex(Path("b.hex"), data["b"], 8)
        write_hex(Path("bias.hex"), data["bias"], self.acc_w)
        write_hex(Path("shift.hex"), data["shift"], 8)
        write_hex(Path("ptf.hex"), data["ptf"], 2)
        d = self.dut
        twin = job["mode"] == MODE_TWIN  # the engine's int8 mode with the edge decode (rtl/src/gemm_engine.v)
        d.mode.value = MODE_INT8 if twin else job["mode"]
        d.m_total.value, d.n_total.value, d.k_total.value = m, n, k
        d.qmin.value, d.qmax.value = job["qmin"], job["qmax"]
        d.twin_m.value = job.get("twin_m", 0) if twin else 0
        d.twin_sign.value, d.twin_bits.value = int(job.get("twin_signed", False)), job.get("a_bits", 8) & 15
        d.out_twin_m.value = 0
        await self.pulse("load")

    async def run_layer(self) -> None:
        """Every tile of the loaded layer, sequenced by the engine itself (no testbench work per tile)."""
        await self.pulse("run_layer")
        await RisingEdge(self.dut.layer_done)
        await RisingEdge(self.dut.clk)

    async def read_back(self, m: int, n: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outputs, accumulators and per-tile cycle counts of the last layer run."""
        await self.pulse("dump")
        await RisingEdge(self.dut.clk)
        return (read_hex(Path("out.hex"), self.out_w, m * n).reshape(m, n),
                read_hex(Path("acc.hex"), self.acc_w, m * n).reshape(m, n),
                read_hex(Path("tiles.hex"), 33, tiles))


@cocotb.test()
async def gemm_jobs_match_hwsim(dut) -> None:
    manifest = json.loads(Path(os.environ["VITSIM_RTL_MANIFEST"]).read_text())
    rows, cols = manifest["rows"], manifest["cols"]
    tb = GemmTB(dut, rows, cols)
    await tb.reset()
    results = []
    for job in manifest["jobs"]:
        start = time.perf_counter()
        data = dict(np.load(job["npz"]))
        m, k = data["a"].shape
        n = data["b"].shape[0]
        load_start = time.perf_counter()
        await tb.load(job, data)
        load_s = time.perf_counter() - load_start
        model = gemm_tile_cycles(k, rows, cols, job["mode"])
        n_tiles = len(gemm_tiles(m, n, rows, cols))
        run_start_ns = get_sim_time("ns")
        sim_start = time.perf_counter()
        await tb.run_layer()
        sim_s = time.perf_counter() - sim_start
        out, acc, tile_cycles = await tb.read_back(m, n, n_tiles)
        read_s = time.perf_counter() - sim_start - sim_s
        tile_cycles = [int(c) for c in tile_cycles]
        bad = np.argwhere((out != data["out"]) | (acc != data["acc"]))
        first = None
        if len(bad):
            i, j = (int(v) for v in bad[0])
            tile_cols = (n + cols - 1) // cols
            first = {"index": [i, j], "tile": [i // rows, j // cols], "tile_number": (i // rows) * tile_cols + j // cols,
                     "rtl_out": int(out[i, j]), "hwsim_out": int(data["out"][i, j]),
                     "rtl_acc": int(acc[i, j]), "hwsim_acc": int(data["acc"][i, j]),
                     # what fed it: row i of A, row j of B (column j of the output), the bias and shift of column j
                     "a_row": data["a"][i].tolist(), "b_row": data["b"][j].tolist(), "ptf": data["ptf"].tolist(),
                     "bias": int(data["bias"][j]), "shift": int(data["shift"][j])}
            # the simulated time of the tile that wrote it (tiles run back to back from run_layer; 10 ns clock):
            # where to look in the waveform (--waves), whatever the design's schedule
            t = first["tile_number"]
            if t < len(tile_cycles):
                begin = max(0, run_start_ns + 10 * (sum(tile_cycles[:t]) - 2))
                first["waves_window_ns"] = [int(begin), int(begin + 10 * (tile_cycles[t] + 4))]
        # functional coverage of what was driven and what came back (rtl.coverage)
        coverage = sample_gemm_job(job, {**data, "acc": acc, "out": out})
        results.append({"name": job["name"], "bit_exact": first is None, "mismatches": int(len(bad)), "first_mismatch": first,
                        "coverage": coverage,
                        "rtl_cycles": int(sum(tile_cycles)), "model_cycles": model * len(tile_cycles),
                        "tiles": len(tile_cycles), "cycles_equal_per_tile": len(tile_cycles) == n_tiles and all(c == model for c in tile_cycles),
                        "wall_s": round(time.perf_counter() - start, 3),
                        # where the wall time went: writing and loading the buffers, simulating the layer, dumping
                        # and reading the results back
                        "phases_s": {"load": round(load_s, 3), "simulate": round(sim_s, 3), "read_back": round(read_s, 3)}})
        dut._log.info("%s: bit_exact=%s cycles rtl=%d model=%d", job["name"], first is None, sum(tile_cycles),
                      model * len(tile_cycles))
    Path(manifest["results"]).write_text(json.dumps(results, indent=1))
    failed = [r["name"] for r in results if not (r["bit_exact"] and r["cycles_equal_per_tile"])]
    assert not failed, f"jobs differing from hwsim: {failed}"

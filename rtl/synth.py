"""Area from synthesis: yosys ``synth`` (generic gate library) of an RTL module, reporting its cell count.

Area is measured from synthesis of the RTL configurations, not guessed: ``synth_cells`` returns the total number of
cells yosys maps the module to, and ``synth_report`` the per-type breakdown. ``python -m rtl.synth --write``
regenerates the area table the cost model reads (hwsim/configs/area.yaml): cells of the PE for every set of operand
modes (the twin-uniform codes' 4-bit product shift included or not), of the column requantizer and of each nonlinear unit (synthesized with 16-entry buffers, so the figure is
the datapath), and their area in um^2 from the cell-type factors below.

Cells -> um^2: each yosys generic cell is priced as the X1 cell of the NanGate 45 nm open cell library that
implements it (NAND2_X1 0.798 um^2 for a 2-input gate, INV_X1 0.532, XOR2_X1 1.596, MUX2_X1 1.862, DFF_X1 4.522).
Placement and wiring are not included: the figures compare configurations, they are not a floor plan.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from rtl.runner import DEPENDENCIES, SRC


def synth_report(top: str, params: dict[str, int] | None = None, timeout: int = 1200) -> dict[str, int]:
    """{cell type: count, ..., "total": n} for ``top`` with Verilog ``params``."""
    if shutil.which("yosys") is None:
        raise RuntimeError("yosys not found on PATH; run `make setup` (Debian package yosys)")
    if top not in DEPENDENCIES:
        raise ValueError(f"unknown module {top!r}; known: {sorted(DEPENDENCIES)}")
    files = " ".join(str(SRC / f"{m}.v") for m in [top] + DEPENDENCIES[top])
    chparam = "".join(f" -set {k} {v}" for k, v in (params or {}).items())
    script = f"read_verilog -DSYNTHESIS {files}; " + (f"chparam{chparam} {top}; " if params else "") + \
             f"synth -top {top} -flatten; stat"
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(["yosys", "-q", "-p", script, "-l", str(Path(tmp) / "log.txt")], capture_output=True,
                             text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"yosys failed on {top}: {res.stderr.strip()[-2000:]}")
        log = (Path(tmp) / "log.txt").read_text()
    stats = log[log.rindex("Number of cells:"):]
    out = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+(\$?\w+)\s+(\d+)\s*$", stats, re.M)}
    out["total"] = int(re.search(r"Number of cells:\s+(\d+)", stats).group(1))
    return out


def synth_cells(top: str, params: dict[str, int] | None = None) -> int:
    return synth_report(top, params)["total"]


CONFIGS = (("mac_pe", {}), ("shift_requant", {}), ("systolic_array", {"R": 2, "C": 2}), ("systolic_array", {"R": 4, "C": 4}))
AREA_TABLE = Path(__file__).resolve().parent.parent / "hwsim" / "configs" / "area.yaml"
UM2 = {"not": 0.532, "gate": 0.798, "xor": 1.596, "mux": 1.862, "ff": 4.522}
PE_VARIANTS = {"int8": {"INT4X2": 0, "LOG2": 0, "LOG_SQRT2": 0, "TWIN": 0},
               "int8+log2": {"INT4X2": 0, "LOG2": 1, "LOG_SQRT2": 0, "TWIN": 0},
               "int8+int4x2": {"INT4X2": 1, "LOG2": 0, "LOG_SQRT2": 0, "TWIN": 0},
               "int8+int4x2+log2": {"INT4X2": 1, "LOG2": 1, "LOG_SQRT2": 0, "TWIN": 0},
               "int8+int4x2+log2+log_sqrt2": {"INT4X2": 1, "LOG2": 1, "LOG_SQRT2": 1, "TWIN": 0},
               "int8+twin": {"INT4X2": 0, "LOG2": 0, "LOG_SQRT2": 0, "TWIN": 1},
               "int8+int4x2+log2+twin": {"INT4X2": 1, "LOG2": 1, "LOG_SQRT2": 0, "TWIN": 1},
               "int8+int4x2+log2+log_sqrt2+twin": {"INT4X2": 1, "LOG2": 1, "LOG_SQRT2": 1, "TWIN": 1}}
UNITS = {"requant": ("shift_requant", {}),
         "softmax": ("softmax_unit", {"ADDR_W": 4, "N_MAX": 16, "SQRT2": 0, "SULQ": 0, "TWIN": 0}),
         "softmax+sqrt2": ("softmax_unit", {"ADDR_W": 4, "N_MAX": 16, "SQRT2": 1, "SULQ": 0, "TWIN": 0}),
         "softmax+twin": ("softmax_unit", {"ADDR_W": 4, "N_MAX": 16, "SQRT2": 0, "SULQ": 0, "TWIN": 1}),
         "softmax+sqrt2+twin": ("softmax_unit", {"ADDR_W": 4, "N_MAX": 16, "SQRT2": 1, "SULQ": 0, "TWIN": 1}),
         "layernorm": ("layernorm_unit", {"ADDR_W": 4, "C_MAX": 16}), "gelu": ("gelu_unit", {"ADDR_W": 4})}


def cell_um2(cell: str) -> float:
    """NanGate 45 nm X1 area of the cell that implements a yosys generic cell (see the module docstring)."""
    name = cell.strip("$_").upper()
    if "DFF" in name or "DLATCH" in name:
        return UM2["ff"]
    if name in ("XOR", "XNOR"):
        return UM2["xor"]
    if name in ("MUX", "NMUX"):
        return UM2["mux"]
    if name in ("NOT", "BUF"):
        return UM2["not"]
    return UM2["gate"] * (2 if name.startswith(("AOI", "OAI")) else 1)


def area_entry(top: str, params: dict[str, int]) -> dict:
    report = synth_report(top, params)
    um2 = sum(count * cell_um2(cell) for cell, count in report.items() if cell != "total")
    return {"module": top, "params": params, "cells": report["total"], "um2": round(um2, 1)}


def area_table() -> dict:
    return {"pe": {modes: area_entry("mac_pe", p) for modes, p in PE_VARIANTS.items()},
            "units": {name: area_entry(top, p) for name, (top, p) in UNITS.items()},
            "um2_per_cell_type": UM2, "yosys": subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()}


def main(argv: list[str] | None = None) -> None:
    """``python -m rtl.synth``: cell counts of the PE, the requantizer and array configurations; ``--write``
    regenerates the cost model's area table."""
    import argparse

    import yaml

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--write", action="store_true", help=f"regenerate {AREA_TABLE.relative_to(AREA_TABLE.parents[2])}")
    args = ap.parse_args(argv)
    if args.write:
        table = area_table()
        AREA_TABLE.write_text("# Area from yosys synthesis; regenerate with `python -m rtl.synth --write` (rtl/synth.py "
                              "states the cells -> um^2 factors).\n" + yaml.safe_dump(table, sort_keys=False))
        for group in ("pe", "units"):
            for name, e in table[group].items():
                print(f"{group} {name:<20} {e['cells']:>8} cells {e['um2']:>10.1f} um^2")
        print(f"wrote {AREA_TABLE}")
        return
    for top, params in CONFIGS:
        label = top + "".join(f" {k}={v}" for k, v in params.items())
        print(f"{label:<28} {synth_cells(top, params):>8} cells")


if __name__ == "__main__":
    main()

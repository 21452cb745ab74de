"""Area from synthesis: yosys ``synth`` (generic gate library) of an RTL module, reporting its cell count.

Area is measured from synthesis of the RTL configurations, not guessed: ``synth_cells`` returns the
total number of cells yosys maps the module to, and ``synth_report`` the per-type breakdown.
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


def main() -> None:
    """Print yosys cell counts of the PE, the requantizer and array configurations (``python -m rtl.synth``)."""
    for top, params in CONFIGS:
        label = top + "".join(f" {k}={v}" for k, v in params.items())
        print(f"{label:<28} {synth_cells(top, params):>8} cells")


if __name__ == "__main__":
    main()

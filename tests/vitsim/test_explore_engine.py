"""`vitsim explore` on the task engine: the same points.csv bytes in this process, on 2 Dask workers, and after a run
killed part-way (scheduler, workers and all) is run again."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from vitsim.explore import explore

GRID = {"wbits": [3, 4, 5, 8], "abits": [4, 8]}
HW = ["16x16", "edge-8x8"]
ARGS = ["explore", "--model", "deit_fmnist", "--method", "minmax", "--wbits", *map(str, GRID["wbits"]),
        "--abits", *map(str, GRID["abits"]), "--hw", *HW, "--limit", "100", "--calib", "64"]
TASKS = len(GRID["wbits"]) * len(GRID["abits"])


def _vitsim(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vitsim", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _stored(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_points_identical_inline_two_workers_and_resumed(tmp_path):
    inline = explore("deit_fmnist", "minmax", GRID["wbits"], GRID["abits"], HW, str(tmp_path / "inline"), limit=100,
                     calib=64, progress=False, workers=0)
    assert inline["failures"] == [] and len(inline["points"]) == TASKS * len(HW)
    expected = (tmp_path / "inline" / "points.csv").read_bytes()

    two = _vitsim(*ARGS, "--out", str(tmp_path / "two"), "--workers", "2", "--json")
    out, err = two.communicate(timeout=600)
    assert two.returncode == 0, err[-3000:]
    assert "2 worker processes" in json.loads(out)["engine"]
    assert (tmp_path / "two" / "points.csv").read_bytes() == expected

    # killed after its first stored point: the command, its scheduler and its workers (one process group)
    killed = tmp_path / "killed"
    p = _vitsim(*ARGS, "--out", str(killed), "--workers", "1", start_new_session=True)
    deadline = time.time() + 300
    while _stored(killed / "results.sqlite") == 0 and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    done = _stored(killed / "results.sqlite")
    assert 1 <= done < TASKS, f"the kill landed after {done} of {TASKS} tasks"
    assert not (killed / "points.csv").exists()

    again = _vitsim(*ARGS, "--out", str(killed), "--workers", "2")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert f"{done} of {TASKS} already done" in err
    assert (killed / "points.csv").read_bytes() == expected
    assert _stored(killed / "results.sqlite") == TASKS  # nothing computed twice, nothing lost


def test_nsga_front_joins_the_points_and_the_report(tmp_path):
    """`explore --optuna`: the study's trials are held-out evaluations (stored for a resume), its front's
    configurations are measured on the test subset like the grid's and drawn in the report."""
    r = explore("deit_fmnist", "minmax", [8], [8], ["16x16"], str(tmp_path), limit=50, calib=32, held_out=32,
                progress=False, workers=0, optuna=True, trials=12, population=6, widths=[4, 8])
    nsga = r["nsga"]
    assert nsga["trials"] == 12 and len(nsga["trial_points"]) == 12 and 1 <= nsga["evaluations"] <= 12
    mixed = [p for p in r["points"] if p["kind"] == "mixed"]
    assert mixed and all(p["config"].startswith("NSGA-") for p in mixed)
    assert {p["config"] for p in mixed} == {f["label"] for f in nsga["front"]}
    html = (tmp_path / "report.html").read_text()
    assert "NSGA-II (Optuna)" in html and 'data-plots="5"' in html   # Pareto x2, heatmap, energy bars, fronts
    assert (tmp_path / "optuna.db").exists()

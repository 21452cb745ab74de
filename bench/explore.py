#!/usr/bin/env python
"""`vitsim explore` throughput: >= 50 (configuration, hardware) points of deit_fmnist in <= 10 minutes on 2 cores.

Runs the default grid (wbits 3 4 5 6 8 x abits 4 5 6 8 = 20 uniform configurations, each quantized from one
calibration, lowered and run by hwsim on 2 000 test images) on three hardware presets (60 priced points), then prints
the wall time, the points per minute and the share of the 10-minute target used. With ``--mp`` it also runs the
hardware-aware greedy search at the energy of uniform W4A4 on 16x16 and prints its top-1 beside uniform W4A4's.
Usage: python bench/explore.py [--limit 2000] [--mp] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vitsim.explore import explore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--mp", action="store_true")
    ap.add_argument("--out", default="out/bench_explore")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    start = time.perf_counter()
    r = explore("deit_fmnist", "p2vit", [3, 4, 5, 6, 8], [4, 5, 6, 8], ["edge-8x8", "16x16", "32x32"], args.out,
                limit=args.limit, progress=not args.json)
    grid_s = time.perf_counter() - start
    summary = {"points": r["configurations"], "grid_seconds": round(grid_s, 1),
               "points_per_minute": round(60 * r["configurations"] / grid_s, 1),
               "target_share": round(grid_s / 600, 3), "report": r["report"]}
    if args.mp:
        t0 = time.perf_counter()
        m = explore("deit_fmnist", "p2vit", [4], [4], ["16x16"], args.out + "_mp", mp_search="greedy",
                    budget="energy=W4A4", limit=args.limit, progress=not args.json)
        uni = next(p for p in m["points"] if p["config"] == "W4A4")
        mp = next(p for p in m["points"] if p["kind"] == "mixed")
        summary.update({"mp_seconds": round(time.perf_counter() - t0, 1), "w4a4_top1": uni["top1"],
                        "w4a4_energy_uj": uni["energy_uj"], "mp_top1": mp["top1"], "mp_energy_uj": mp["energy_uj"],
                        "mp_gain_pt": round(100 * (mp["top1"] - uni["top1"]), 2), "mp_report": m["report"]})
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['points']} points in {summary['grid_seconds']} s: {summary['points_per_minute']} points/min, "
              f"{100 * summary['target_share']:.0f} % of the 10-minute target")
        if args.mp:
            print(f"hardware-aware greedy MP on 16x16 at <= W4A4 energy: top-1 {100 * summary['mp_top1']:.2f} % "
                  f"({summary['mp_energy_uj']:.2f} uJ) vs uniform W4A4 {100 * summary['w4a4_top1']:.2f} % "
                  f"({summary['w4a4_energy_uj']:.2f} uJ): {summary['mp_gain_pt']:+.2f} pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())

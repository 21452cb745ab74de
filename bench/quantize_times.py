#!/usr/bin/env python
"""Wall time of ``vitsim quantize`` per PTQ method on deit_fmnist, one method after another in one run: the budget is
10 minutes on 2 cores with the method's default calibration set, so run this on idle cores.

The timed part is what ``vitsim quantize`` reports as ``quantize_s`` (vitsim.pipelines.quantize: calibration, the
method's scale choice and learning, the export); the test-set evaluation is skipped. Usage:
python bench/quantize_times.py [--methods pfcr isvit ...] [--bits W4A4] [--threads N] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from quant.methods import METHODS, get_method  # noqa: E402
from vitsim.pipelines import make_recipe, quantize, set_threads  # noqa: E402
from vitsim.table import parse_bits  # noqa: E402

BUDGET_S = 600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
    parser.add_argument("--bits", default="W4A4")
    parser.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: the cores)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    w, a = parse_bits(args.bits)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            calib = get_method(method).calibration_images
            recipe = make_recipe("deit_fmnist", method, w, a, None, calib, 0, None, None)
            r = quantize(recipe, str(Path(tmp) / f"{method}.vitp"), simulate=False, limit=1)
            rows.append({"method": method, "bits": f"W{w}A{a}", "calib": calib, "quantize_s": r["quantize_s"],
                         "within_budget": r["quantize_s"] <= BUDGET_S, "threads": torch.get_num_threads()})
            print(f"{method:>8}: {r['quantize_s']:7.1f} s ({calib} calibration images)", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, sort_keys=True))
    else:
        print(f"deit_fmnist, W{w}A{a}, {torch.get_num_threads()} torch threads")
        print("| method | calibration images | quantize time | within 10 min |")
        print("| --- | --- | --- | --- |")
        for r in rows:
            minutes, seconds = divmod(round(r["quantize_s"]), 60)
            print(f"| {r['method']} | {r['calib']} | {minutes} min {seconds:02d} s | "
                  f"{'yes' if r['within_budget'] else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

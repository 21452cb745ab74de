#!/usr/bin/env python
"""The minmax vs p2vit table on deit_fmnist (the full 10 000 Fashion-MNIST test images unless --limit).

For each method and W/A setting: fp32 top-1, fake-quant top-1, integer (hwsim) top-1, their agreement, and the drop of
the integer model vs fp32. Programs go to out/quant_table/. Usage: python bench/quant_table.py [--limit N] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vitsim.pipelines import make_recipe, quantize  # noqa: E402

CONFIGS = ((8, 8), (4, 4), (6, 6), (4, 8), (3, 3))
METHODS = ("p2vit", "minmax")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--out-dir", default="out/quant_table")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for w, a in CONFIGS:
        for method in METHODS:
            recipe = make_recipe("deit_fmnist", method, w, a, None, args.calib, 0, None, "fmnist")
            r = quantize(recipe, str(Path(args.out_dir) / f"deit_fmnist_{method}_w{w}a{a}.vitp"), args.limit)
            r["drop_pt"] = round(100 * (r["fp32_top1"] - r["int_top1"]), 2)
            rows.append(r)
            print(f"W{w}A{a} {method:>6}: fp32 {100 * r['fp32_top1']:.2f}  fake-quant {100 * r['quant_top1']:.2f}  "
                  f"integer {100 * r['int_top1']:.2f}  drop {r['drop_pt']:.2f} pt  agreement {100 * r['agreement']:.2f}",
                  file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, sort_keys=True))
    else:
        print("| W/A | method | fake-quant top-1 | integer top-1 (hwsim) | drop vs fp32 | int/fake-quant agreement |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| W{r['wbits']}A{r['abits']} | {r['method']} | {100 * r['quant_top1']:.2f} % | {100 * r['int_top1']:.2f} % | "
                  f"{r['drop_pt']:.2f} pt | {100 * r['agreement']:.2f} % |")
        print(f"\nfp32 top-1 {100 * rows[0]['fp32_top1']:.2f} % on {rows[0]['n']} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

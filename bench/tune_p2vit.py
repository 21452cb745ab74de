#!/usr/bin/env python
"""Tune P^2-ViT's smoothing strengths on held-out training images (never test images).

The PoT-aware smoothing (quant/methods/p2vit.py) moves range from a LayerNorm output channel into the next Linear's
weight column with strength alpha: one alpha before the attention qkv, one before the other Linears (fc1, patch
merging). The paper gives no value for ours. This script quantizes deit_fmnist at every (alpha_attention, alpha_other)
pair of the grid and scores fake-quant top-1 on ``--held-out`` training images disjoint from the calibration subset,
at each bit-width given (the default, W4A4 and W3A3, is where smoothing matters; at 8 bits every choice ties). The
score is the mean over the bit-widths; the best pair is what p2vit.py's constants should hold.
Usage: python bench/tune_p2vit.py [--held-out 2000] [--bits W4A4,W3A3] [--attention 0.25,0.35,0.45]
       [--other 0.35,0.5,0.65] [--json]   (about 1.5 minutes per pair and bit-width on 2 cores)
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.data import calibration_data, held_out_data  # noqa: E402
from models.evaluate import predict  # noqa: E402
from models.registry import create_model  # noqa: E402
from quant.build import default_map, quantize_model  # noqa: E402
from quant.methods.p2vit import P2ViT  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _bits(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        m = re.fullmatch(r"W(\d)A(\d)", item.strip())
        if not m:
            raise SystemExit(f"--bits: expected items like W4A4, got {item!r}")
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", type=int, default=2000, help="held-out training images that score each pair")
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--bits", default="W4A4,W3A3")
    parser.add_argument("--attention", default="0.25,0.35,0.45", help="alpha before qkv")
    parser.add_argument("--other", default="0.35,0.5,0.65", help="alpha before fc1 and patch merging")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    net = create_model("deit_fmnist")
    calib = calibration_data("fmnist", net, args.calib, 0)
    images, labels = held_out_data("fmnist", net, args.held_out, args.calib, 0)
    images = images.numpy()
    bits = _bits(args.bits)
    rows = []
    for a_att, a_other in itertools.product(_floats(args.attention), _floats(args.other)):
        scores = {}
        for w, a in bits:
            method = P2ViT(smooth_alpha_attention=a_att, smooth_alpha_other=a_other)
            q = quantize_model(net, calib, method, default_map(w, a), metadata={"input_shape": list(calib.shape[1:])})
            scores[f"W{w}A{a}"] = float((predict(q, images) == labels).mean())
        mean = sum(scores.values()) / len(scores)
        rows.append({"alpha_attention": a_att, "alpha_other": a_other, "top1": scores, "mean": mean})
        print(f"alpha_attention {a_att:.2f}  alpha_other {a_other:.2f}  "
              + "  ".join(f"{k} {100 * v:6.2f} %" for k, v in scores.items()) + f"  mean {100 * mean:6.2f} %",
              file=sys.stderr, flush=True)
    best = max(rows, key=lambda r: r["mean"])
    result = {"held_out": int(len(labels)), "calib": args.calib, "rows": rows, "best": best}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"held-out training images: {len(labels)} (disjoint from the {args.calib} calibration images)")
        print("| alpha before qkv | alpha before fc1 | " + " | ".join(f"W{w}A{a}" for w, a in bits) + " | mean |")
        print("| --- | --- | " + " | ".join("---" for _ in bits) + " | --- |")
        for r in rows:
            mark = " **best**" if r is best else ""
            print(f"| {r['alpha_attention']:.2f} | {r['alpha_other']:.2f} | "
                  + " | ".join(f"{100 * v:.2f} %" for v in r["top1"].values()) + f" | {100 * r['mean']:.2f} %{mark} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Tune PFCR's scale learning rate and initialisation on held-out training images (never test images).

PFCR (quant/methods/pfcr.py) learns LSQ scales as log2 of the scale, at ``lr_scale``, and starts from quantizers the
paper's abstract leaves open: the plain post-LayerNorm quantizer (symmetric, per tensor) or the re-parameterised one
(RepQ-ViT's fold, per tensor with a zero point). This script quantizes deit_fmnist with each configuration given and scores fake-quant top-1 (what
hwsim reproduces) on ``--held-out`` training images disjoint from the calibration subset, at each bit-width given.
Usage: python bench/tune_pfcr.py [--bits W4A4,W3A3] [--lr-scale 4e-5,1e-3] [--init plain,reparam] [--held-out 2000]
       [--threads N] [--json]   (6-11 minutes per configuration and bit-width on 2 cores)
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from models.data import calibration_data, held_out_data  # noqa: E402
from models.evaluate import predict  # noqa: E402
from models.registry import create_model  # noqa: E402
from quant.build import default_map, quantize_model  # noqa: E402
from quant.methods.pfcr import PFCR  # noqa: E402
from vitsim.table import parse_bits  # noqa: E402

INITS = {"plain": dict(reparameterise=False), "reparam": dict(reparameterise=True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", type=int, default=2000, help="held-out training images that score each row")
    parser.add_argument("--calib", type=int, default=PFCR.calibration_images)
    parser.add_argument("--bits", default="W4A4,W3A3")
    parser.add_argument("--lr-scale", default="4e-5,1e-3", help="comma-separated LSQ learning rates (log2 scale)")
    parser.add_argument("--init", default="plain,reparam", help=f"comma-separated initialisations: {', '.join(INITS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    inits = [i for i in args.init.split(",") if i]
    if any(i not in INITS for i in inits):
        raise SystemExit(f"--init: expected some of {', '.join(INITS)}, got {args.init!r}")
    net = create_model("deit_fmnist")
    calib = calibration_data("fmnist", net, args.calib, 0)
    images, labels = held_out_data("fmnist", net, args.held_out, args.calib, 0)
    images = images.numpy()
    fp32 = float((predict(net, images) == labels).mean())
    rows = []
    for text, init, lr in itertools.product(args.bits.split(","), inits, (float(x) for x in args.lr_scale.split(","))):
        w, a = parse_bits(text)
        start = time.perf_counter()
        q = quantize_model(net, calib, PFCR(lr_scale=lr, **INITS[init]), default_map(w, a), name="deit_fmnist")
        top1 = float((predict(q, images) == labels).mean())
        rows.append({"bits": f"W{w}A{a}", "init": init, "lr_scale": lr, "top1": top1,
                     "wall_s": round(time.perf_counter() - start, 1)})
        print(f"W{w}A{a}  init {init:<8} lr_scale {lr:g}  {100 * top1:6.2f} %  (fp32 {100 * fp32:.2f} %, "
              f"{rows[-1]['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    result = {"held_out": int(len(labels)), "calib": args.calib, "fp32_top1": fp32, "rows": rows}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"held-out training images: {len(labels)} (disjoint from the {args.calib} calibration images), "
              f"fp32 {100 * fp32:.2f} %")
        print("| W/A | initialisation | lr_scale | fake-quant top-1 | drop vs fp32 |")
        print("| --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['bits']} | {r['init']} | {r['lr_scale']:g} | {100 * r['top1']:.2f} % | "
                  f"{100 * (fp32 - r['top1']):.2f} pt |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

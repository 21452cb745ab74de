#!/usr/bin/env python
"""Tune PFCR's scale learning rate, initialisation, post-softmax codes and calibration size on held-out training
images (never test images).

PFCR (quant/methods/pfcr.py) learns LSQ scales as log2 of the scale, at ``lr_scale``, and starts from quantizers the
paper's abstract leaves open: the plain post-LayerNorm quantizer (symmetric, per tensor) or the re-parameterised one
(RepQ-ViT's fold, per tensor with a zero point); log2, log-sqrt(2) or SULQ post-softmax codes. This script quantizes
deit_fmnist with each configuration given and scores fake-quant top-1 (what hwsim reproduces) on ``--held-out``
training images disjoint from every calibration subset of the sizes in ``--calib`` and ``--disjoint-from`` (the
seeded subsets are not nested), so every row, and every run with the same sizes, is scored on the same images.
Usage: python bench/tune_pfcr.py [--bits W4A4,W3A3] [--lr-scale 4e-5,1e-3] [--init plain,reparam]
       [--softmax log2,sqrt2,sulq] [--calib 256,1024] [--iterations 300,600] [--seeds 0,1] [--held-out 2000]
       [--threads N] [--json]
       (6-11 minutes per configuration and bit-width on 2 cores)
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.data import calibration_data, held_out_data  # noqa: E402
from models.evaluate import predict  # noqa: E402
from models.registry import create_model  # noqa: E402
from quant.build import default_map, quantize_model  # noqa: E402
from quant.methods.pfcr import ITERATIONS, PFCR, SOFTMAX_CODES  # noqa: E402
from vitsim.pipelines import set_threads  # noqa: E402
from vitsim.table import parse_bits  # noqa: E402

INITS = {"plain": dict(reparameterise=False), "reparam": dict(reparameterise=True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", type=int, default=2000, help="held-out training images that score each row")
    parser.add_argument("--calib", default=str(PFCR.calibration_images), help="comma-separated calibration sizes")
    parser.add_argument("--bits", default="W4A4,W3A3")
    parser.add_argument("--lr-scale", default="4e-5,1e-3", help="comma-separated LSQ learning rates (log2 scale)")
    parser.add_argument("--init", default="plain,reparam", help=f"comma-separated initialisations: {', '.join(INITS)}")
    parser.add_argument("--disjoint-from", default="256,1024",
                        help="calibration sizes the held-out images avoid besides --calib's (keep equal across runs)")
    parser.add_argument("--softmax", default="log2",
                        help=f"comma-separated post-softmax codes: {', '.join(SOFTMAX_CODES)}")
    parser.add_argument("--iterations", default=str(ITERATIONS), help="comma-separated iterations per unit and stage")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the reconstruction (batch order, QDrop)")
    parser.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: the cores)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    inits = [i for i in args.init.split(",") if i]
    if any(i not in INITS for i in inits):
        raise SystemExit(f"--init: expected some of {', '.join(INITS)}, got {args.init!r}")
    softmaxes = [c for c in args.softmax.split(",") if c]
    if any(c not in SOFTMAX_CODES for c in softmaxes):
        raise SystemExit(f"--softmax: expected some of {', '.join(SOFTMAX_CODES)}, got {args.softmax!r}")
    sizes = [int(n) for n in args.calib.split(",") if n]
    net = create_model("deit_fmnist")
    # the same held-out images for every row, and for runs split across processes: disjoint from each calibration
    # subset that a row or --disjoint-from names
    exclude = sorted(set(sizes) | {int(n) for n in args.disjoint_from.split(",") if n})
    images, labels = held_out_data("fmnist", net, args.held_out, exclude, 0)
    images = images.numpy()
    fp32 = float((predict(net, images) == labels).mean())
    rows = []
    lrs = [float(x) for x in args.lr_scale.split(",")]
    iteration_counts, seeds = [int(x) for x in args.iterations.split(",")], [int(x) for x in args.seeds.split(",")]
    grid = itertools.product(args.bits.split(","), inits, lrs, softmaxes, sizes, iteration_counts, seeds)
    for text, init, lr, softmax, size, iterations, seed in grid:
        w, a = parse_bits(text)
        calib = calibration_data("fmnist", net, size, 0)
        start = time.perf_counter()
        method = PFCR(iterations=iterations, lr_scale=lr, softmax=softmax, seed=seed, **INITS[init])
        q = quantize_model(net, calib, method, default_map(w, a), name="deit_fmnist")
        top1 = float((predict(q, images) == labels).mean())
        rows.append({"bits": f"W{w}A{a}", "init": init, "lr_scale": lr, "softmax": softmax, "calib": size,
                     "iterations": iterations, "seed": seed,
                     "top1": top1, "wall_s": round(time.perf_counter() - start, 1)})
        print(f"W{w}A{a}  init {init:<8} lr_scale {lr:g}  softmax {softmax:<5} calib {size:5d}  iterations "
              f"{iterations}  seed {seed}  {100 * top1:6.2f} %  (fp32 {100 * fp32:.2f} %, {rows[-1]['wall_s']:.0f} s)",
              file=sys.stderr, flush=True)
    result = {"held_out": int(len(labels)), "disjoint_from": exclude, "fp32_top1": fp32, "rows": rows}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"held-out training images: {len(labels)} (disjoint from the calibration images), "
              f"fp32 {100 * fp32:.2f} %")
        print("| W/A | initialisation | lr_scale | softmax | calibration | iterations | seed | fake-quant top-1 "
              "| drop vs fp32 | time |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['bits']} | {r['init']} | {r['lr_scale']:g} | {r['softmax']} | {r['calib']} | "
                  f"{r['iterations']} | {r['seed']} | {100 * r['top1']:.2f} % | {100 * (fp32 - r['top1']):.2f} pt | "
                  f"{r['wall_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

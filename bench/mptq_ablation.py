#!/usr/bin/env python
"""What MPTQ-ViT's two parts buy on deit_fmnist (fake-quant top-1, which hwsim reproduces: agreement 100 % in
bench/quant_table.py): PTQ4ViT's quantizers alone, + OPT-m (data-driven post-GELU region ratio), + SQ-b (centred,
smoothed LayerNorm outputs), and both (vitsim's mptq), at each bit-width given.
Usage: python bench/mptq_ablation.py [--bits 4,3] [--limit N] [--json]  (about 1 minute per row on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.data import calibration_data, eval_data  # noqa: E402
from models.evaluate import predict  # noqa: E402
from models.registry import create_model  # noqa: E402
from quant.build import default_map, quantize_model  # noqa: E402
from quant.methods.mptq import MPTQViT  # noqa: E402
from quant.methods.ptq4vit import CALIBRATION_IMAGES  # noqa: E402

VARIANTS = (("PTQ4ViT quantizers (neither)", dict(sq_b=False, opt_m=False)), ("+ OPT-m", dict(sq_b=False, opt_m=True)),
            ("+ SQ-b", dict(sq_b=True, opt_m=False)), ("SQ-b + OPT-m (mptq)", dict(sq_b=True, opt_m=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", default="4,3", help="comma-separated WbAb widths (W = A)")
    parser.add_argument("--limit", type=int, default=None, help="test images (default: all 10 000)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    net = create_model("deit_fmnist")
    calib = calibration_data("fmnist", net, CALIBRATION_IMAGES, 0)
    images, labels = eval_data("fmnist", net, args.limit)
    fp32 = float((predict(net, images) == labels).mean())
    rows = []
    for bits in (int(b) for b in args.bits.split(",")):
        for label, flags in VARIANTS:
            start = time.perf_counter()
            q = quantize_model(net, calib, MPTQViT(**flags), default_map(bits, bits), name="deit_fmnist")
            top1 = float((predict(q, images) == labels).mean())
            rows.append({"bits": bits, "variant": label, **flags, "fake_quant_top1": top1,
                         "wall_s": round(time.perf_counter() - start, 1)})
            if not args.json:
                print(f"W{bits}A{bits}  {label:<30} {100 * top1:6.2f} %  (fp32 {100 * fp32:.2f} %, "
                      f"{rows[-1]['wall_s']} s)", flush=True)
    if args.json:
        print(json.dumps({"fp32_top1": fp32, "images": len(labels), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

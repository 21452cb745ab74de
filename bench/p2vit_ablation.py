#!/usr/bin/env python
"""Where P^2-ViT loses accuracy on deit_fmnist, and what each of our readings of the paper buys (fake-quant top-1).

Part 1 turns on, one after the other, the choices quant/methods/p2vit.py makes where the paper gives no detail: own-MSE
rounding of every activation, then output-MSE rounding of activations read by a Linear, then the GELU output's zero
point, then logit-MSE rounding of q and k. Part 2 keeps the full method and raises one group to 8 bits at a time
(LayerNorm outputs before qkv / fc1, q/k/v, attention output, GELU output, all weights) to show where the rest of the
drop sits. Fake-quant computes the integers hwsim computes (bench/quant_table.py measures their agreement: 100 %).
Usage: python bench/p2vit_ablation.py [--wbits 4] [--abits 4] [--limit N] [--json]  (about 1 minute per row)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.data import calibration_data, eval_data  # noqa: E402
from models.evaluate import predict  # noqa: E402
from models.registry import create_model  # noqa: E402
from quant.build import default_map, quantize_model  # noqa: E402
from quant.methods.p2vit import P2ViT  # noqa: E402

CHOICES = (
    ("activations by own MSE", dict(output_mse=False, gelu_zero_point=False, logit_mse=False)),
    ("+ Linear inputs by output MSE", dict(output_mse=True, gelu_zero_point=False, logit_mse=False)),
    ("+ GELU output zero point", dict(output_mse=True, gelu_zero_point=True, logit_mse=False)),
    ("+ q, k by logit MSE (vitsim's p2vit)", dict(output_mse=True, gelu_zero_point=True, logit_mse=True)),
)
GROUPS = (("LayerNorm output before qkv", "attn.qkv"), ("q, k, v", "attn.matmul"), ("attention output", "attn.proj"),
          ("LayerNorm output before fc1", "mlp.fc1"), ("GELU output", "mlp.fc2"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wbits", type=int, default=4)
    parser.add_argument("--abits", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None, help="test images (default: all 10 000)")
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    net = create_model("deit_fmnist")
    calib = calibration_data("fmnist", net, args.calib, 0)
    images, labels = eval_data("fmnist", net, args.limit)
    fp32 = float((predict(net, images) == labels).mean())
    rows = []

    def measure(part: str, what: str, method: P2ViT, bits_map) -> None:
        q = quantize_model(net, calib, method, bits_map, metadata={"input_shape": list(calib.shape[1:])})
        top1 = float((predict(q, images) == labels).mean())
        rows.append({"part": part, "what": what, "top1": top1, "drop_pt": round(100 * (fp32 - top1), 2)})
        print(f"{part:>9} | {what:<40} | top-1 {100 * top1:6.2f} % | drop {100 * (fp32 - top1):5.2f} pt",
              file=sys.stderr, flush=True)

    for what, switches in CHOICES:
        measure("choices", what, P2ViT(**switches), default_map(args.wbits, args.abits))
    for what, layer in GROUPS:
        mp = default_map(args.wbits, args.abits)
        mp.regex.append((rf"blocks\.\d+\.{re.escape(layer)}\w*", {"abits": 8}))  # matmul: _qk and _av
        measure("8-bit", what, P2ViT(), mp)
    mp = default_map(args.wbits, args.abits)
    mp.global_bits["wbits"] = 8
    measure("8-bit", "all weights", P2ViT(), mp)
    result = {"wbits": args.wbits, "abits": args.abits, "n": int(len(labels)), "fp32_top1": fp32, "rows": rows}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"W{args.wbits}A{args.abits} p2vit, fp32 {100 * fp32:.2f} % on {len(labels)} test images")
        print("| part | what | fake-quant top-1 | drop vs fp32 |\n| --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['part']} | {r['what']} | {100 * r['top1']:.2f} % | {r['drop_pt']:.2f} pt |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

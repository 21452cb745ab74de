"""``vitsim demo`` / ``make demo``: the end-to-end flow on the bundled models, in a few minutes.

deit_fmnist: float top-1 -> P^2-ViT quantization (W8A8, W4A4) and the min-max baseline at W4A4 -> integer programs on
disk -> hwsim golden-model simulation with top-1 and agreement against fake-quant -> a small exploration (4 uniform
widths x 2 hardware presets, accuracy from hwsim and cost from the cost model) with its HTML report. Then the hybrid
mobilevit_fmnist (convolutions, BatchNorm folded, SiLU, MobileViT blocks) through P^2-ViT at W8A8 the same way.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vitsim.explore import explore
from vitsim.pipelines import evaluate, make_recipe, quantize

CONFIGS = (("deit_fmnist", "p2vit", 8, 8), ("deit_fmnist", "p2vit", 4, 4), ("deit_fmnist", "minmax", 4, 4),
           ("mobilevit_fmnist", "p2vit", 8, 8))


def run_demo(out_dir: str, limit: int | None = 2000, progress: bool = True) -> dict[str, Any]:
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    fp32 = evaluate("deit_fmnist", None, "fmnist", limit, progress=progress)
    say(f"deit_fmnist fp32 top-1 {100 * fp32['top1']:.2f} % on {fp32['n']} Fashion-MNIST test images")
    rows = []
    for model, method, w, a in CONFIGS:
        recipe = make_recipe(model, method, w, a, None, 256, 0, None, "fmnist")
        path = out / f"{model}_{method}_w{w}a{a}.vitp"
        r = quantize(recipe, str(path), limit, progress=progress)
        rows.append(r)
        say(f"{model} {method:>6} W{w}A{a}: fake-quant {100 * r['quant_top1']:.2f} %, integer (hwsim) {100 * r['int_top1']:.2f} %, "
            f"agreement {100 * r['agreement']:.2f} %, {r['images_per_s']} img/s -> {path}")
    ex = explore("deit_fmnist", "p2vit", [4, 8], [4, 8], ["edge-8x8", "16x16"], str(out / "explore"), limit=limit or 2000,
                 progress=progress)
    for p in sorted(ex["pareto"], key=lambda p: (p["hw"], p["energy_uj"])):
        say(f"  Pareto on {p['hw']:<9} {p['config']:<5} top-1 {100 * p['top1']:.2f} %, {p['energy_uj']:.1f} uJ, "
            f"{p['latency_ms']:.3f} ms per image")
    say(f"exploration report: {ex['report']}")
    result = {"fp32": fp32, "quantized": rows, "explore": {k: ex[k] for k in ("pareto", "report", "csv", "configurations")},
              "seconds": round(time.perf_counter() - start, 1)}
    (out / "demo.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    say(f"done in {result['seconds']} s; results in {out / 'demo.json'}")
    return result

"""Tune the Q-ViT recipe on held-out training images (never the test set): one short QAT run per invocation.

    python bench/qat_tune.py --wbits 3 --abits 3 --set train_images=12800 --set lr=3e-4 [--json]

Each run starts from a fresh cache (nothing resumes across variants) and prints the held-out fake-quant top-1 after
every epoch and at step 0. The recipe fields are quant.qat.QATRecipe's; what was tuned and the values chosen are in
its docstring.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="deit_fmnist")
    p.add_argument("--wbits", type=int, required=True)
    p.add_argument("--abits", type=int, required=True)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from quant.qat import QATRecipe, train_qat
    from vitsim.pipelines import set_threads

    set_threads(args.threads)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    recipe = QATRecipe(args.model, args.wbits, args.abits, **{k: _value(v) for k, v in overrides.items()})
    os.environ["VITSIM_CACHE"] = tempfile.mkdtemp(prefix="qat_tune_")
    run = train_qat(recipe, log=lambda s: print(s, file=sys.stderr, flush=True), progress=False)
    initial = run.history[0]["held_out_top1"]
    result = {"recipe": dataclasses.asdict(recipe), "set": overrides, "held_out_step0": initial,
              "history": run.history, "held_out_top1": run.history[-1]["held_out_top1"], "train_s": round(run.train_s, 1)}
    print(json.dumps(result) if args.json else
          f"{args.model} W{args.wbits}A{args.abits} {overrides}: held-out fake-quant top-1 {initial:.4f} at step 0 -> "
          f"{result['held_out_top1']:.4f} after {recipe.epochs} epochs ({run.train_s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Integer LayerNorm precision: the mean rounded to a whole code (I-ViT's I-LayerNorm, F = 0) against the mean kept
with F fraction bits (vitsim's kernel, F = hwsim.kernels.layernorm.MEAN_FRAC_BITS), side by side in one run.

Rows of C channels are drawn as a residual stream looks to a LayerNorm: a per-row offset, a per-row spread from a few
codes to thousands (log-uniform), and a few outlier channels. The float reference is LayerNorm of the same integer
row in float64 with random gamma and beta; the integer output uses the constants the lowering computes
(``layernorm_int_params``) at a per-tensor output scale fitted to the reference. The error is in output LSBs (a
perfect rounding of the reference has mean |err| 0.25 LSB), at 8- and 16-bit outputs.
Usage: python bench/layernorm_precision.py [--rows N] [--channels C] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwsim.kernels.layernorm import MEAN_FRAC_BITS  # noqa: E402
from hwsim.reference import ops as R  # noqa: E402
from quant.fakequant import layernorm_int_params  # noqa: E402


def rows_like_a_residual_stream(rows: int, c: int, rng: np.random.Generator) -> np.ndarray:
    offset = rng.uniform(-300, 300, (rows, 1))
    spread = np.exp(rng.uniform(np.log(2), np.log(3000), (rows, 1)))
    x = rng.normal(offset, spread, (rows, c))
    outliers = rng.choice(c, 3, replace=False)
    x[:, outliers] *= 6
    return np.clip(np.floor(x + 0.5), -2**15, 2**15 - 1).astype(np.int64)


def float_layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    y = x - x.mean(-1, keepdims=True)
    return y / np.sqrt((y * y).mean(-1, keepdims=True)) * gamma + beta


def measure(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bits: int, mean_frac_bits: int) -> dict[str, float]:
    ref = float_layernorm(x.astype(np.float64), gamma, beta)
    scale = np.abs(ref).max() / (2 ** (bits - 1) - 1)
    p = layernorm_int_params(torch.from_numpy(gamma), torch.from_numpy(beta), torch.tensor([scale], dtype=torch.float64),
                             norm_bits=31 + mean_frac_bits)
    out = R.layernorm(x, p["gamma"], p["beta"], p["shift"], bits, mean_frac_bits=mean_frac_bits)
    err = np.abs(out - ref / scale)
    return {"mean_abs_lsb": float(err.mean()), "max_abs_lsb": float(err.max())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--channels", type=int, default=192)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rows_like_a_residual_stream(args.rows, args.channels, rng)
    gamma = rng.normal(1.0, 0.3, args.channels)
    beta = rng.normal(0.0, 0.3, args.channels)
    results = [{"out_bits": bits, "mean_frac_bits": f, **measure(x, gamma, beta, bits, f)}
               for bits in (8, 16) for f in (0, MEAN_FRAC_BITS)]
    if args.json:
        print(json.dumps({"rows": args.rows, "channels": args.channels, "results": results}))
        return 0
    print(f"{args.rows} rows x {args.channels} channels; error of integer LayerNorm against float64, in output LSBs")
    print(f"{'out bits':>8} {'mean: whole code':>18} {f'mean: {MEAN_FRAC_BITS} frac bits':>18} {'ratio':>7}   (max |err|)")
    for bits in (8, 16):
        old, new = (next(r for r in results if r["out_bits"] == bits and r["mean_frac_bits"] == f) for f in (0, MEAN_FRAC_BITS))
        print(f"{bits:>8} {old['mean_abs_lsb']:>18.4f} {new['mean_abs_lsb']:>18.4f} {old['mean_abs_lsb'] / new['mean_abs_lsb']:>6.2f}x"
              f"   ({old['max_abs_lsb']:.2f} -> {new['max_abs_lsb']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

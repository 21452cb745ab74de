#!/usr/bin/env python
"""Calibrate once, quantize at many maps: 10 bit-width maps of deit_fmnist (p2vit), timed two ways in one run.

- independent: ``quantize_model`` per map (trace, smoothing, observation and every scale choice, each time);
- calibrate once: one ``calibrate`` and then ``quantize_calibrated`` per map (scale choices cached per site and bits).
Both paths must give byte-identical programs for every map (checked here), so the speed-up is not bought with a
different result. The maps are what a mixed-precision search visits: W4/W8 and A4/A8 per layer group.
Usage: python bench/calibrate_once.py [--calib N] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwsim.ir import save  # noqa: E402
from models.data import calibration_data  # noqa: E402
from models.registry import create_model  # noqa: E402
from quant.build import quantize_calibrated, quantize_model  # noqa: E402
from quant.calibrate import calibrate  # noqa: E402
from quant.methods import get_method  # noqa: E402
from quant.mixed_precision import MixedPrecisionMap  # noqa: E402

MAPS = {
    "W8A8": {"global": {"wbits": 8, "abits": 8}},
    "W4A8": {"global": {"wbits": 4, "abits": 8}},
    "W4A4": {"global": {"wbits": 4, "abits": 4}},
    "W8A4": {"global": {"wbits": 8, "abits": 4}},
    "W4A4, attention products A8": {"global": {"wbits": 4, "abits": 4}, "op_type": {"matmul": {"abits": 8}}},
    "W4A4, MLP W8": {"global": {"wbits": 4, "abits": 4}, "regex": [{"pattern": r".*\.mlp\..*", "wbits": 8}]},
    "W4A4, block 0 W8A8": {"global": {"wbits": 4, "abits": 4}, "regex": [{"pattern": r"blocks\.0\..*", "wbits": 8, "abits": 8}]},
    "W4A8, qkv W8": {"global": {"wbits": 4, "abits": 8}, "regex": [{"pattern": r".*\.qkv", "wbits": 8}]},
    "W8A4, fc2 A8": {"global": {"wbits": 8, "abits": 4}, "regex": [{"pattern": r".*\.fc2", "abits": 8}]},
    "W4A4, last block W8A8": {"global": {"wbits": 4, "abits": 4}, "regex": [{"pattern": r"blocks\.5\..*", "wbits": 8, "abits": 8}]},
}


def _bytes(program, folder: Path, tag: str) -> bytes:
    path = folder / f"{tag}.vitp"
    save(program, path)
    return path.read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=128, help="calibration images (training split)")
    parser.add_argument("--out-dir", default="out/calibrate_once")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = create_model("deit_fmnist")
    calib = calibration_data("fmnist", model, args.calib, seed=0)
    maps = {name: MixedPrecisionMap.from_dict(d) for name, d in MAPS.items()}

    t0 = time.perf_counter()
    independent = {name: quantize_model(model, calib, get_method("p2vit"), m, name="deit_fmnist").export()
                   for name, m in maps.items()}
    t_independent = time.perf_counter() - t0

    t0 = time.perf_counter()
    calibration = calibrate(model, calib, get_method("p2vit"))
    t_calibrate = time.perf_counter() - t0
    once = {name: quantize_calibrated(calibration, m, name="deit_fmnist").export() for name, m in maps.items()}
    t_once = time.perf_counter() - t0

    same = all(_bytes(independent[n], out, "a") == _bytes(once[n], out, "b") for n in maps)
    result = {"maps": len(maps), "calibration_images": args.calib, "independent_s": round(t_independent, 2),
              "calibrate_once_s": round(t_once, 2), "calibration_s": round(t_calibrate, 2),
              "speedup": round(t_independent / t_once, 2), "programs_identical": same}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"{len(maps)} maps of deit_fmnist, p2vit, {args.calib} calibration images")
        print(f"  independent quantizations : {t_independent:7.1f} s")
        print(f"  calibrate once + {len(maps)} maps  : {t_once:7.1f} s  (calibration {t_calibrate:.1f} s)")
        print(f"  speed-up                  : {t_independent / t_once:7.2f} x   programs byte-identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

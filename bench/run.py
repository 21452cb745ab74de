#!/usr/bin/env python
"""vitsim benchmarks: ratios measured side by side in one run (never pass/fail).

  gemm_vs_torch_fp32  hwsim int GEMM throughput / torch fp32 matmul, DeiT-Tiny shapes (M = 197, 1576; (K, N) of
                      qkv, proj, fc1, fc2), geometric mean over the 8 shapes (each shape is printed too), 8-bit
                      operands (the byte path where the CPU has one); gemm_int16_vs_torch_fp32 the same products
                      forced onto the int16 path (the previous kernel, for comparison)
  gemm4_vs_torch_fp32 the same at 4-bit operands (codes in [-8, 7])
  e2e_vs_torch_fp32   integer DeiT-Tiny-224 forward (hwsim, p2vit W8A8) images/s / torch fp32 eager, batch 8;
                      e2e_w4a4_vs_torch_fp32 the same at W4A4
  e2e_vs_fakequant    integer forward / the project's fake-quant torch model (quant.build.QuantModel), batch 8
  rtl_cycles_per_s    (with --rtl) simulated cycles per second of wall time verifying DeiT-Tiny block 0's GEMMs on a
                      16x16 array with Verilator, the simulator's start included; rtl_simulate_cycles_per_s the rate
                      while the engine runs; rtl_phases_s where the wall time went. Also the full-count PE /
                      requantizer vectors (100 000 random + exhaustive 4-bit) on both simulators

Same thread count for every side (default: all cores). Usage: python bench/run.py [--json] [--rtl] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHAPES = [(m, k, n) for m in (197, 1576) for k, n in ((192, 576), (192, 192), (192, 768), (768, 192))]


def best_time(fn, repeat: int = 5, min_time: float = 0.2) -> float:
    """Best-of-``repeat`` seconds per call, each sample looping for at least ``min_time``."""
    fn()
    best = math.inf
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


def bench_gemm(log) -> dict:
    from hwsim.kernels.gemm import gemm, pack_b

    rng = np.random.default_rng(0)
    result = {}
    for key, lo, hi, isas in (("gemm_vs_torch_fp32", -128, 128, None), ("gemm4_vs_torch_fp32", -8, 8, None),
                              ("gemm_int16_vs_torch_fp32", -128, 128, ())):
        rows, ratios = [], []
        for m, k, n in SHAPES:
            a = rng.integers(lo, hi, (1, m, k)).astype(np.int16)
            b = pack_b(rng.integers(lo, hi, (1, n, k)).astype(np.int16))  # weights packed once, as the executor holds them
            t_int = best_time(lambda: gemm(a, b, byte_isas=isas))
            fa, fb = torch.randn(m, k), torch.randn(n, k)
            t_fp = best_time(lambda: fa @ fb.T)
            ops = 2 * m * k * n
            ratio = t_fp / t_int
            ratios.append(ratio)
            rows.append({"m": m, "k": k, "n": n, "int_gops": round(ops / t_int / 1e9, 1),
                         "fp32_gflops": round(ops / t_fp / 1e9, 1), "ratio": round(ratio, 3)})
            log(f"  {key} GEMM {m:>5}x{k:>4}x{n:>4}: int {ops / t_int / 1e9:7.1f} GOP/s  fp32 {ops / t_fp / 1e9:7.1f} "
                f"GFLOP/s  ratio {ratio:5.2f}")
        result[key] = round(math.exp(sum(map(math.log, ratios)) / len(ratios)), 3)
        result[key.replace("_vs_torch_fp32", "_shapes")] = rows
    from hwsim.kernels.gemm_bytes import AVX2, VNNI, isa_available

    best = isa_available()[:1]
    result["gemm_byte_isa"] = {VNNI: "vnni", AVX2: "avx2"}[best[0]] if best else "none (int16 path)"
    return result


def bench_e2e(log, bits: int = 8, batch: int = 8) -> dict:
    from hwsim.executor import quantize_input, run
    from models.data import random_images
    from models.registry import create_model
    from quant.build import default_map, quantize_model
    from quant.methods import get_method

    net = create_model("deit_tiny_patch16_224", pretrained=False)
    calib = torch.from_numpy(random_images(net, 8, seed=0))
    q = quantize_model(net, calib, get_method("p2vit"), default_map(bits, bits), name="deit_tiny_patch16_224",
                     metadata={"input_shape": [3, 224, 224]})
    program = q.export()
    images = random_images(net, batch, seed=1)
    x = quantize_input(program, images)
    timg = torch.from_numpy(images)
    with torch.no_grad():
        t_fp = best_time(lambda: net(timg), repeat=3, min_time=1.0)
        t_fq = best_time(lambda: q(timg), repeat=2, min_time=1.0)
    t_int = best_time(lambda: run(program, x), repeat=3, min_time=1.0)
    ips = {k: batch / t for k, t in (("int", t_int), ("fp32", t_fp), ("fakequant", t_fq))}
    log(f"  DeiT-Tiny-224 W{bits}A{bits} batch {batch}: integer {ips['int']:.1f} img/s, torch fp32 {ips['fp32']:.1f} "
        f"img/s, fake-quant {ips['fakequant']:.1f} img/s")
    tag = "" if bits == 8 else f"_w{bits}a{bits}"
    return {f"e2e{tag}_vs_torch_fp32": round(ips["int"] / ips["fp32"], 3),
            f"e2e{tag}_vs_fakequant": round(ips["int"] / ips["fakequant"], 3),
            f"int{tag}_images_per_s": round(ips["int"], 2), f"fp32{tag}_images_per_s": round(ips["fp32"], 2),
            f"fakequant{tag}_images_per_s": round(ips["fakequant"], 2)}


def bench_rtl(log) -> dict:
    from hwsim.executor import quantize_input, run
    from models.data import random_images
    from models.registry import create_model
    from quant.build import default_map, quantize_model
    from quant.methods import get_method
    from rtl.layers import block_jobs
    from rtl.runner import run_gemm_jobs

    net = create_model("deit_tiny_patch16_224", pretrained=False)
    q = quantize_model(net, torch.from_numpy(random_images(net, 4, seed=0)), get_method("p2vit"), default_map(8, 8),
                     metadata={"input_shape": [3, 224, 224]})
    program = q.export()
    trace = run(program, quantize_input(program, random_images(net, 1, seed=1)), trace=True).trace
    jobs = block_jobs(program, trace, 0)
    run_gemm_jobs(jobs[:1], "verilator", 16, 16)  # build outside the timed run
    start = time.perf_counter()
    res = run_gemm_jobs(jobs, "verilator", 16, 16)
    wall = time.perf_counter() - start
    cycles = sum(r["rtl_cycles"] for r in res)
    phases = {p: round(sum(r["phases_s"][p] for r in res), 3) for p in ("load", "simulate", "read_back")}
    phases["jobs_other"] = round(sum(r["wall_s"] for r in res) - sum(phases.values()), 3)  # npz, compare, coverage
    phases["simulator_start_and_exit"] = round(wall - sum(r["wall_s"] for r in res), 3)
    log(f"  RTL 16x16 Verilator, DeiT-Tiny block 0 GEMMs: {cycles} cycles in {wall:.1f} s "
        f"({cycles / wall:,.0f} cycles/s; {cycles / phases['simulate']:,.0f} while simulating), bit-exact "
        f"{all(r['bit_exact'] for r in res)}, cycles equal {all(r['cycles_equal_per_tile'] for r in res)}; "
        f"wall time: {phases}")
    from rtl.runner import run_pe_vectors

    vectors = {sim: run_pe_vectors(sim, n_random=100_000, seed=11) for sim in ("verilator", "icarus")}
    for sim, v in vectors.items():
        log(f"  PE / requantizer vectors ({sim}): {v['pe_vectors']} PE, {v['requant_vectors']} requant, "
            f"mismatches {v['pe_mismatches']} / {v['requant_mismatches']}")
    return {"rtl_block_wall_s": round(wall, 2), "rtl_cycles_per_s": round(cycles / wall),
            "rtl_simulate_cycles_per_s": round(cycles / phases["simulate"]), "rtl_phases_s": phases,
            "rtl_bit_exact": all(r["bit_exact"] for r in res),
            "rtl_cycles_equal": all(r["cycles_equal_per_tile"] for r in res), "pe_vectors": vectors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rtl", action="store_true", help="also time RTL verification of a DeiT-Tiny block")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    from vitsim.pipelines import set_threads

    set_threads(args.threads)
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    result = {"threads": args.threads}
    result.update(bench_gemm(log))
    result.update(bench_e2e(log, 8))
    result.update(bench_e2e(log, 4))
    if args.rtl:
        result.update(bench_rtl(log))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        keys = ["gemm_vs_torch_fp32", "gemm4_vs_torch_fp32", "gemm_int16_vs_torch_fp32", "e2e_vs_torch_fp32",
                "e2e_w4a4_vs_torch_fp32", "e2e_vs_fakequant"] + (["rtl_cycles_per_s", "rtl_simulate_cycles_per_s"]
                                                                  if args.rtl else [])
        print("  ".join(f"{k} {result[k]}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())

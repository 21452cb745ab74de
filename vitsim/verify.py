"""``vitsim verify``: run a program's GEMM layers on the RTL and check them against hwsim (bit-exact, cycles equal),
with on-chip energy (no DRAM) from the cost model's counted activity. The input is the first test image of the program's dataset (or a seeded random
image when it has none)."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from hwsim.arch import load_hardware, with_array
from hwsim.cost import cost
from hwsim.cost.energy import gemm_activity, gemm_energy_pj
from hwsim.executor import quantize_input, run
from hwsim.ir import load
from rtl.layers import (GEMM_KINDS, GemmJob, block_jobs, block_prefixes, bridge_prefix, conv_jobs, gelu_job,
                        layernorm_job, softmax_job)
from rtl.runner import run_gelu_job, run_gemm_jobs, run_layernorm_job, run_softmax_job

UNIT_KINDS = ("softmax", "norm1", "norm2", "gelu")
CONVS = "convs"   # a hybrid's bridge block: every convolution around the transformer block, as GEMMs
LAYERS = GEMM_KINDS + UNIT_KINDS + (CONVS,)



class VerifyError(ValueError):
    """A layer or block the program does not have (a user error)."""

def job_energy_pj(job: GemmJob, rows: int, cols: int) -> float:
    """On-chip energy of one GEMM job (one head of a MatMul) on the default hardware resized to rows x cols."""
    hw = load_hardware()
    m, k, n = job.shape
    act = gemm_activity(m, n, k, rows, cols, job.a_bits, job.b_bits, job.mode, int((job.ptf != 0).sum()),
                        hw.array.acc_bits, int(job.qmax).bit_length() + 1)
    return gemm_energy_pj(act, hw.energy, hw.memory)["total"]


def _input(program, recipe: dict | None) -> np.ndarray:
    data = (recipe or {}).get("data", "random")
    if data == "fmnist":
        from models import fmnist

        images, _ = fmnist.load_split("test", (recipe or {}).get("root"))
        return quantize_input(program, fmnist.normalize(images[:1]))
    spec = program.spec(program.inputs[0])
    rng = np.random.default_rng(0)
    return quantize_input(program, rng.standard_normal((1, *spec.shape)).astype(np.float32))


def verify(path: str, layer: str = "all", block: int = 0, sim: str = "verilator", rows: int = 8, cols: int = 8,
           waves: bool = False) -> dict[str, Any]:
    program = load(path)
    kinds = LAYERS if layer == "all" else (layer,)
    if layer != "all" and layer not in LAYERS:
        raise VerifyError(f"unknown layer {layer!r}; choose one of {LAYERS} or 'all'")
    prefixes = block_prefixes(program)
    if not 0 <= block < len(prefixes):
        raise VerifyError(f"block {block} out of range: the program has {len(prefixes)} blocks")
    prefix = prefixes[block]
    trace = run(program, _input(program, program.metadata.get("recipe")), trace=True).trace
    start = time.perf_counter()
    layers = []
    gemm_kinds = tuple(k for k in kinds if k in GEMM_KINDS)
    bridge = bridge_prefix(program, block) if CONVS in kinds else None
    if layer == CONVS and bridge is None:
        raise VerifyError(f"block {block} ({prefix}) has no convolutions around it: the program is not a hybrid")
    if gemm_kinds or bridge:
        jobs = conv_jobs(program, trace, bridge) if bridge else []
        # a bridge block's GEMMs: those of every transformer block in it (MobileViT stacks two or more)
        blocks = [i for i, p in enumerate(prefixes) if p.startswith(bridge + ".")] if bridge else [block]
        for i in blocks if gemm_kinds else []:
            jobs += block_jobs(program, trace, i, kinds=gemm_kinds)
        for job, r in zip(jobs, run_gemm_jobs(jobs, sim, rows, cols, waves=waves)):
            layers.append({"layer": job.name, "shape_mkn": list(job.shape), "mode": job.mode, "bit_exact": r["bit_exact"],
                           "first_mismatch": r["first_mismatch"], "rtl_cycles": r["rtl_cycles"],
                           "model_cycles": r["model_cycles"], "tiles": r["tiles"],
                           "energy_pj": round(job_energy_pj(job, rows, cols), 1), "wall_s": r["wall_s"]})
    unit_costs = {o.name: o for o in cost(program, with_array(load_hardware(), rows, cols)).ops}
    for kind in (k for k in kinds if k in UNIT_KINDS):
        t0 = time.perf_counter()
        if kind == "softmax":
            r = run_softmax_job(softmax_job(program, trace, block), sim)
        elif kind == "gelu":
            r = run_gelu_job(gelu_job(program, trace, f"{prefix}.mlp.act"), sim)
        else:
            r = run_layernorm_job(layernorm_job(program, trace, f"{prefix}.{kind}"), sim)
        unit = unit_costs[r["name"]]
        layers.append({"layer": r["name"], "bit_exact": r["bit_exact"], "first_mismatch": r["first_mismatch"],
                       "rtl_cycles": r["rtl_cycles"], "model_cycles": r["model_cycles"],
                       "energy_pj": round(unit.energy_total_pj - unit.energy_pj["dram"], 1),
                       "wall_s": round(time.perf_counter() - t0, 3)})
    wall = time.perf_counter() - start
    cycles = sum(x["rtl_cycles"] for x in layers)
    sim_s = sum(x["wall_s"] for x in layers)
    return {"program": str(path), "sim": sim, "array": f"{rows}x{cols}", "block": block, "bridge": bridge,
            "layers": layers,
            "all_bit_exact": all(x["bit_exact"] for x in layers),
            "cycles_equal": all(x["rtl_cycles"] == x["model_cycles"] for x in layers),
            "total_cycles": cycles, "simulated_cycles_per_s": round(cycles / max(sim_s, 1e-9)), "wall_s": round(wall, 2)}

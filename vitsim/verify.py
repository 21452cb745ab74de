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
from hwsim.executor import run
from hwsim.ir import load
from rtl.coverage import merge, summary
from rtl.directed import directed_gemm_jobs
from rtl.layers import (GEMM_KINDS, GemmJob, block_jobs, block_prefixes, bridge_prefix, conv_jobs, gelu_job,
                        layernorm_job, softmax_job)
from rtl.runner import (UserDut, addr_bits, prebuild_gemm, prebuild_unit, run_gelu_job, run_gemm_jobs,
                        run_layernorm_job, run_softmax_job)
from vitsim.vectors import input_images

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


def _unit_run(kind: str, job, sim: str) -> dict[str, Any]:
    if kind == "softmax":
        return run_softmax_job(job, sim)
    if kind == "gelu":
        return run_gelu_job(job, sim)
    return run_layernorm_job(job, sim)


def gemm_task(jobs: list[GemmJob], sim: str, rows: int, cols: int, addr_w: int, waves: bool,
              dut: UserDut | None = None) -> list[dict[str, Any]]:
    """GEMM jobs in one simulation (a task of vitsim.engine; the build is made before the tasks start)."""
    return [_gemm_layer(job, r, rows, cols)
            for job, r in zip(jobs, run_gemm_jobs(jobs, sim, rows, cols, waves=waves, addr_w=addr_w, dut=dut))]


def balanced_chunks(jobs: list[GemmJob], n: int) -> list[list[int]]:
    """Job indices in ``n`` groups of about equal work (multiply-accumulates; longest first onto the lightest group),
    each in job order. A simulation costs a start-up of about a second, so a worker gets one group, not one job."""
    groups: list[list[int]] = [[] for _ in range(max(1, min(n, len(jobs))))]
    load = [0] * len(groups)
    for i in sorted(range(len(jobs)), key=lambda i: -int(np.prod(jobs[i].shape))):
        g = load.index(min(load))
        groups[g].append(i)
        load[g] += int(np.prod(jobs[i].shape))
    return [sorted(g) for g in groups if g]


def verify_task(*args: Any) -> Any:
    """A task of ``verify`` on the engine: a group of GEMM jobs (``gemm_task``) or a unit (``unit_task``)."""
    return gemm_task(*args) if isinstance(args[0], list) else unit_task(*args)


def unit_task(kind: str, job, sim: str) -> dict[str, Any]:
    """One nonlinear unit's rows in its own simulation (a task of vitsim.engine)."""
    t0 = time.perf_counter()
    r = _unit_run(kind, job, sim)
    return {**r, "wall_s": round(time.perf_counter() - t0, 3)}


def _gemm_layer(job: GemmJob, r: dict[str, Any], rows: int, cols: int) -> dict[str, Any]:
    return {"layer": job.name, "shape_mkn": list(job.shape), "mode": job.mode, "bit_exact": r["bit_exact"],
            "first_mismatch": r["first_mismatch"], "rtl_cycles": r["rtl_cycles"], "model_cycles": r["model_cycles"],
            "tiles": r["tiles"], "energy_pj": round(job_energy_pj(job, rows, cols), 1), "wall_s": r["wall_s"],
            "coverage": r.get("coverage"), **({"phases_s": r["phases_s"]} if "phases_s" in r else {}),
            **({"waves": r["waves"]} if "waves" in r else {})}


def _jobs(program, kinds: tuple[str, ...], layer: str, block: int, prefixes: list[str]
          ) -> tuple[list[GemmJob], list[tuple[str, Any]], str | None]:
    """The block's GEMM jobs (or its bridge block's), its units' jobs, and the bridge prefix (hybrids), from one
    hwsim trace of the program on its first test image."""
    prefix = prefixes[block]
    trace = run(program, input_images(program, 1)[0], trace=True).trace
    gemm_kinds = tuple(k for k in kinds if k in GEMM_KINDS)
    bridge = bridge_prefix(program, block) if CONVS in kinds else None
    if layer == CONVS and bridge is None:
        raise VerifyError(f"block {block} ({prefix}) has no convolutions around it: the program is not a hybrid")
    jobs: list[GemmJob] = []
    if gemm_kinds or bridge:
        jobs = conv_jobs(program, trace, bridge) if bridge else []
        # a bridge block's GEMMs: those of every transformer block in it (MobileViT stacks two or more)
        blocks = [i for i, p in enumerate(prefixes) if p.startswith(bridge + ".")] if bridge else [block]
        for i in blocks if gemm_kinds else []:
            jobs += block_jobs(program, trace, i, kinds=gemm_kinds)
    units = []
    for kind in (k for k in kinds if k in UNIT_KINDS):
        if kind == "softmax":
            units.append((kind, softmax_job(program, trace, block)))
        elif kind == "gelu":
            units.append((kind, gelu_job(program, trace, f"{prefix}.mlp.act")))
        else:
            units.append((kind, layernorm_job(program, trace, f"{prefix}.{kind}")))
    return jobs, units, bridge


def verify(path: str, layer: str = "all", block: int = 0, sim: str = "verilator", rows: int = 8, cols: int = 8,
           waves: bool = False, workers: int | None = 0, scheduler: str | None = None, dut: UserDut | None = None,
           reference_schedule: bool = True, directed: bool = False) -> dict[str, Any]:
    """``workers`` 0 (default): every GEMM job in one simulation, then each unit, in this process. Otherwise each GEMM
    job and each unit is a task on ``Engine(workers, scheduler)`` (vitsim.engine), the simulator builds made once
    first; the per-layer results are the same, in the same order. ``dut``: the user's GEMM engine in place of
    rtl/src's (GEMM layers only); its cycles are compared with the model's only with ``reference_schedule``.
    ``directed``: the GEMM jobs of rtl.directed after the layer's, for the coverage bins real data misses. The result's
    ``coverage`` is rtl.coverage's summary over every GEMM job run, with the bins only directed jobs hit."""
    program = load(path)
    if layer != "all" and layer not in LAYERS:
        raise VerifyError(f"unknown layer {layer!r}; choose one of {LAYERS} or 'all'")
    if dut is not None and layer in UNIT_KINDS:
        raise VerifyError(f"--rtl checks a GEMM engine; {layer!r} is a nonlinear unit (rtl/src's units only)")
    kinds = (layer,) if layer != "all" else (GEMM_KINDS + (CONVS,) if dut is not None else LAYERS)
    prefixes = block_prefixes(program)
    if not 0 <= block < len(prefixes):
        raise VerifyError(f"block {block} out of range: the program has {len(prefixes)} blocks")
    start = time.perf_counter()
    engine = None
    if workers != 0 or scheduler is not None:
        from vitsim.engine import Engine

        # the cluster's processes start, and import this module (hwsim, numba, the RTL runner), while this one traces
        # the program and checks the builds
        engine = Engine(workers, scheduler, progress=False, preload=(__name__,), background=True).__enter__()
    try:
        jobs, units, bridge = _jobs(program, kinds, layer, block, prefixes)
        if directed:
            if not jobs:
                raise VerifyError(f"--directed adds GEMM jobs; layer {layer!r} has none")
            jobs += directed_gemm_jobs()
        unit_costs = {o.name: o for o in cost(program, with_array(load_hardware(), rows, cols)).ops}
        if engine is None:
            layers = [_gemm_layer(job, r, rows, cols)
                      for job, r in zip(jobs, run_gemm_jobs(jobs, sim, rows, cols, waves=waves, dut=dut))] if jobs else []
            unit_results = [unit_task(kind, job, sim) for kind, job in units]
        else:
            addr_w = addr_bits(jobs) if jobs else 0
            if jobs:   # build once here: workers then only run (two workers building one folder would race)
                prebuild_gemm(sim, rows, cols, addr_w, waves, dut=dut)
            for kind, job in units:
                prebuild_unit(kind, job, sim)
            groups = balanced_chunks(jobs, engine.worker_count()) if jobs else []
            tasks = [(f"gemm/{g[0]}", ([jobs[i] for i in g], sim, rows, cols, addr_w, waves, dut)) for g in groups]
            # the units after the GEMM groups, longest first (the model's cycles), so the last to finish is short
            by_length = sorted(range(len(units)), key=lambda i: -unit_costs[units[i][1].name].cycles)
            tasks += [(f"unit/{units[i][0]}", (*units[i], sim)) for i in by_length]
            outcomes = engine.map(verify_task, tasks, desc="verify")
            failed = [o for o in outcomes if not o.ok]
            if failed:
                raise RuntimeError(f"verify: {failed[0].key} failed: {failed[0].error}")
            by_job = {i: layer for g, o in zip(groups, outcomes) for i, layer in zip(g, o.value)}
            layers = [by_job[i] for i in range(len(jobs))]
            by_unit = dict(zip(by_length, outcomes[len(groups):]))
            unit_results = [by_unit[i].value for i in range(len(units))]
    finally:
        if engine is not None:
            engine.__exit__(None, None, None)
    for r in unit_results:
        unit = unit_costs[r["name"]]
        layers.append({"layer": r["name"], "bit_exact": r["bit_exact"], "first_mismatch": r["first_mismatch"],
                       "rtl_cycles": r["rtl_cycles"], "model_cycles": r["model_cycles"],
                       "energy_pj": round(unit.energy_total_pj - unit.energy_pj["dram"], 1), "wall_s": r["wall_s"]})
    wall = time.perf_counter() - start
    per_job = [(x["layer"].startswith("directed."), x.pop("coverage")) for x in layers if "coverage" in x]
    coverage = summary(merge(c for _, c in per_job)) if per_job else None
    if coverage:
        real = summary(merge(c for is_directed, c in per_job if not is_directed))
        coverage["directed_only"] = [b for b in real["missed"] if b not in coverage["missed"]]
    cycles = sum(x["rtl_cycles"] for x in layers)
    sim_s = sum(x["wall_s"] for x in layers)
    return {"program": str(path), "sim": sim, "array": f"{rows}x{cols}", "block": block, "bridge": bridge,
            "layers": layers, "engine": engine.describe() if engine else "in this process",
            "dut": f"{dut.top} ({', '.join(str(s) for s in dut.sources)})" if dut else "gemm_engine (rtl/src)",
            "all_bit_exact": all(x["bit_exact"] for x in layers), "coverage": coverage,
            # a user's design with its own schedule: cycles reported, not compared
            "cycles_equal": all(x["rtl_cycles"] == x["model_cycles"] for x in layers) if reference_schedule else None,
            "total_cycles": cycles, "simulated_cycles_per_s": round(cycles / max(sim_s, 1e-9)), "wall_s": round(wall, 2)}

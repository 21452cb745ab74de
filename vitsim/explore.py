"""``vitsim explore``: bit-widths x hardware, accuracy and cost on the same axes.

The model is calibrated once (quant.calibrate); every uniform (wbits, abits) of the grid is quantized from that
calibration, lowered, and run by hwsim on a fixed test subset (accuracy does not depend on the hardware); every
(program, hardware) point is priced by hwsim's cost model. With ``mp_search`` a mixed-precision search
(quant.search: greedy or coarse-to-fine) runs per hardware under ``budget`` (bits, energy or latency; ``energy=W4A4``
means the energy of uniform W4A4 on that hardware), with fitness on held-out training images; its map is written as
YAML for ``vitsim quantize --mp`` and its program evaluated like the grid's. Results: ``points.csv``, ``results.json``,
the plots and ``report.html`` (vitsim.report).
"""
from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.arch import HardwareConfig, load_hardware
from hwsim.cost import cost
from hwsim.ir import Program, save
from models.data import calibration_data, eval_data, held_out_data
from models.registry import create_model
from quant.build import default_map, quantize_calibrated
from quant.calibrate import calibrate
from quant.methods import get_method
from quant.parts import QuantError
from quant.search.budget import METRICS, Budget
from quant.search.coarse_to_fine import coarse_to_fine
from quant.search.fitness import HeldOutFitness, Score, integer_logits, score_config
from quant.search.greedy import greedy_search, trajectory
from quant.search.nsga import compare_fronts, front_2d, hypervolume_2d, nsga_search
from quant.search.sensitivity import Sensitivity
from quant.search.space import BIT_CHOICES, Config, SearchSpace, key, to_map
from vitsim.engine import Engine
from vitsim.pipelines import default_data
from vitsim.store import ResultStore, code_fingerprint, fingerprint

SEARCHES = ("greedy", "c2f")


def parse_budget(text: str) -> tuple[str, str]:
    """``energy=12.5``, ``latency=0.8``, ``bits=5`` or ``energy=W4A4`` (that uniform configuration's value)."""
    m = re.fullmatch(r"(\w+)=(\S+)", text or "")
    if not m or m.group(1) not in METRICS:
        raise QuantError(f"budget {text!r}: want one of {', '.join(f'{k}=VALUE' for k in METRICS)} (VALUE a number or e.g. W4A4)")
    value = m.group(2)
    if not re.fullmatch(r"W\d+A\d+", value, re.I):
        try:
            float(value)
        except ValueError as err:
            raise QuantError(f"budget {text!r}: {value!r} is neither a number nor a uniform configuration like W4A4") from err
    return m.group(1), value


def _lowered_value(metric: str, program: Program, config: dict, budget: Budget, hw: HardwareConfig) -> float:
    """The budget metric of a lowered program: what the points report (bits need no pricing)."""
    if metric == "bits":
        return budget.value(config)
    totals = cost(program, hw).totals()
    return totals["energy_uj"] if metric == "energy" else totals["latency_ms"]


def _budget_limit(metric: str, value: str, calibration, model: str, budget: Budget, hw: HardwareConfig) -> float:
    """A number, or a uniform configuration's figure (``W4A4``) taken from its lowered program, as its point shows it."""
    m = re.fullmatch(r"W(\d+)A(\d+)", value, re.I)
    if not m:
        return float(value)
    w, a = int(m.group(1)), int(m.group(2))
    program = quantize_calibrated(calibration, default_map(w, a), model).export()
    return _lowered_value(metric, program, budget.space.uniform(w, a), budget, hw)


def pareto_front(points: list[dict[str, Any]], cost_key: str) -> list[dict[str, Any]]:
    """Points not dominated in (higher top-1, lower ``cost_key``), per hardware."""
    front = []
    for p in points:
        dominated = any(q is not p and q["hw"] == p["hw"] and q["top1"] >= p["top1"] and q[cost_key] <= p[cost_key]
                        and (q["top1"] > p["top1"] or q[cost_key] < p[cost_key]) for q in points)
        if not dominated:
            front.append(p)
    return front


def _accuracy(program: Program, images: np.ndarray, labels: np.ndarray) -> float:
    return float((integer_logits(program, images).argmax(1) == labels).mean())


def _point(label: str, kind: str, program: Program, hw: HardwareConfig, top1: float, bits: dict) -> dict[str, Any]:
    priced = cost(program, hw)
    t = priced.totals()
    wavg = np.mean([b["wbits"] for b in bits.values()])
    aavg = np.mean([b["abits"] for b in bits.values()])
    return {"config": label, "kind": kind, "hw": hw.name, "top1": float(top1), "energy_uj": float(t["energy_uj"]),
            "latency_ms": float(t["latency_ms"]), "cycles": int(t["cycles"]), "dram_bytes": int(t["dram_bytes"]),
            "area_mm2": float(t["area_mm2"]), "mean_wbits": round(float(wavg), 3), "mean_abits": round(float(aavg), 3),
            "energy_pj": {k: float(v) for k, v in t["energy_pj"].items()}, "bits": bits}


def uniform_points(wbits: int, abits: int, *, calibration, images: np.ndarray, labels: np.ndarray,
                   hardware: list[HardwareConfig], model: str) -> list[dict[str, Any]]:
    """One task of the grid (run by a Dask worker): uniform W/A quantized from the shared calibration, lowered, its
    integer top-1 on the test subset, priced on every hardware configuration."""
    q = quantize_calibrated(calibration, default_map(wbits, abits), model)
    program = q.export()
    top1 = _accuracy(program, images, labels)
    return [_point(f"W{wbits}A{abits}", "uniform", program, hw, top1, q.metadata["bits"]) for hw in hardware]


def config_points(label: str, config: Config, space: SearchSpace, *, calibration, images: np.ndarray,
                  labels: np.ndarray, hardware: list[HardwareConfig], model: str) -> list[dict[str, Any]]:
    """One task: a searched mixed-precision configuration, like ``uniform_points``."""
    program = quantize_calibrated(calibration, to_map(config), model).export()
    top1 = _accuracy(program, images, labels)
    return [_point(label, "mixed", program, hw, top1, space.full(config)) for hw in hardware]


def fitness_score(config: Config, *, calibration, images: np.ndarray, labels: np.ndarray, teacher, model: str,
                  objective: str) -> dict[str, float]:
    """One held-out evaluation of a search (run by a Dask worker; quant.search.fitness.score_config)."""
    return vars(score_config(calibration, config, images, labels, teacher, model, objective))


def _config_key(config: Config) -> str:
    return "fitness/" + ",".join(f"{n}:{w}:{a}" for n, w, a in key(config))


def _engine_runner(engine: Engine, store: ResultStore, fitness: HeldOutFitness, calibration_handle,
                   retry_failed: bool):
    """HeldOutFitness's batch runner on the engine: each configuration a task, kept in the results store; the
    held-out images and the float model's log-probabilities shipped to the workers once."""
    shared = {"calibration": calibration_handle, "images": engine.share(fitness.images),
              "labels": engine.share(np.asarray(fitness.labels)), "teacher": engine.share(fitness.teacher_log_probs()),
              "model": fitness.name, "objective": fitness.objective}

    def runner(configs: list[Config]) -> list[Score]:
        tasks = [(_config_key(c), (c,)) for c in configs]
        scores = []
        for outcome in engine.map(fitness_score, tasks, shared, store, "explore: held-out fitness", retry_failed):
            if not outcome.ok:
                raise QuantError(f"a held-out evaluation failed: {outcome.error}")
            scores.append(Score(**outcome.value))
        return scores

    return runner


def explore(model: str, method: str, wbits: list[int], abits: list[int], hws: list[str], out_dir: str,
            mp_search: str | None = None, budget: str | None = None, limit: int = 2000, calib: int = 256,
            held_out: int = 512, seed: int = 0, data: str | None = None, progress: bool = True,
            hw_overrides: list[str] | None = None, objective: str = "kl", workers: int | None = None,
            scheduler: str | None = None, retry_failed: bool = False, optuna: bool = False,
            trials: int | None = None, population: int = 24, widths: list[int] | None = None) -> dict[str, Any]:
    """The grid and the searches as tasks on ``Engine(workers, scheduler)`` (vitsim.engine), every finished task kept
    in ``out_dir/results.sqlite``: the same command run again resumes (vitsim.store). ``points.csv`` is written in
    grid order whatever the engine, so it is byte-identical across worker counts and interruptions. ``optuna`` adds
    an NSGA-II study (quant.search.nsga) of ``trials`` held-out evaluations (default: as many as the greedy search
    used, so their fronts compare at equal cost; 200 without one), resumable from ``out_dir/optuna.db``."""
    start = time.perf_counter()
    if mp_search is not None and mp_search not in SEARCHES:
        raise QuantError(f"mixed-precision search {mp_search!r}, want one of {SEARCHES}")
    if mp_search is not None and budget is None:
        raise QuantError("--mp-search needs --budget (e.g. energy=W4A4, latency=0.5 or bits=5)")
    if widths and (8 not in widths or any(not 2 <= w <= 8 for w in widths)):
        raise QuantError(f"--widths {widths}: want widths from 2 to 8 including 8 (the searches start at 8 bits)")
    metric, value = parse_budget(budget) if budget else (None, None)
    hardware = [load_hardware(h, hw_overrides) for h in hws]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda s: print(s, flush=True)) if progress else (lambda s: None)

    net = create_model(model)
    data = data or default_data(model)
    run = fingerprint({"model": model, "method": method, "hw": [vars(h) for h in hardware], "limit": limit,
                       "widths": widths,
                       "calib": calib, "held_out": held_out, "seed": seed, "data": data, "objective": objective,
                       "code": code_fingerprint()})
    calibration = calibrate(net, calibration_data(data, net, calib, seed), get_method(method), progress)
    images, labels = eval_data(data, net, limit)
    space = SearchSpace.from_layers(calibration.layers(), tuple(widths) if widths else BIT_CHOICES)
    points: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    grid = [(w, a) for w in wbits for a in abits]
    searches = []
    with Engine(workers, scheduler, progress) as engine, ResultStore(out / "results.sqlite", run) as store:
        say(f"explore: {len(grid)} uniform configurations x {len(hardware)} hardware on {engine.describe()}")
        shared = {"calibration": engine.share(calibration), "images": engine.share(images),
                  "labels": engine.share(labels)}
        measure = {**shared, "hardware": hardware, "model": model}

        def run_points(fn, tasks: list, names: list[str], desc: str) -> None:
            """Configurations measured on the test subset and priced: their points, or their failures."""
            for name, outcome in zip(names, engine.map(fn, tasks, measure, store, desc, retry_failed)):
                if outcome.ok:
                    points.extend(outcome.value)
                else:
                    failures.append({"task": outcome.key, "config": name, "error": outcome.error})

        run_points(uniform_points, [(f"uniform/W{w}A{a}", (w, a)) for w, a in grid], [f"W{w}A{a}" for w, a in grid],
                   "explore: uniform grid")
        nsga = None
        if mp_search is not None or optuna:
            base = quantize_calibrated(calibration, default_map(8, 8), model).export()
            hx, hy = held_out_data(data, net, held_out, calib, seed)
            fitness = HeldOutFitness(calibration, space, hx.numpy(), hy, model, objective)
            fitness.runner = _engine_runner(engine, store, fitness, shared["calibration"], retry_failed)
        if mp_search is not None:
            sensitivity = Sensitivity(fitness)
            targets = hardware if metric != "bits" else hardware[:1]
            for hw in targets:
                searches.append(_search(mp_search, metric, value, calibration, model, space, base, hw, hardware,
                                        sensitivity, seed, out, images, labels, points, say))
        if optuna:
            if trials is None:
                trials = fitness.evaluations if mp_search == "greedy" else 200
            # a fitness of its own (its own count of evaluations), on the same workers and results store
            twin = HeldOutFitness(calibration, space, fitness.images, fitness.labels, model, objective,
                                  runner=fitness.runner)
            nsga = _nsga(twin, base, hardware, trials, population, seed, f"explore-{run}", out, searches, say)
            run_points(config_points, [(f"nsga/{p['label']}", (p["label"], p["config"], space)) for p in nsga["front"]],
                       [p["label"] for p in nsga["front"]], "explore: NSGA-II front")
    pareto = {"energy": pareto_front(points, "energy_uj"), "latency": pareto_front(points, "latency_ms")}
    for p in points:
        p["pareto_energy"] = any(p is q for q in pareto["energy"])
        p["pareto_latency"] = any(p is q for q in pareto["latency"])
    _write_csv(points, out / "points.csv")
    from vitsim.report import write_report

    report = write_report(points, searches, space, out, {"model": model, "method": method, "test_images": int(len(labels)),
                                                         "calibration_images": calib, "held_out_images": held_out,
                                                         "engine": engine.describe()}, failures, nsga)
    result = {"model": model, "method": method, "n": int(len(labels)), "points": points,
              "pareto": [{"config": p["config"], "hw": p["hw"], "top1": p["top1"], "energy_uj": p["energy_uj"],
                          "latency_ms": p["latency_ms"]} for p in pareto["energy"]],
              "searches": searches, "nsga": nsga, "failures": failures, "report": str(report),
              "csv": str(out / "points.csv"),
              "results_store": str(out / "results.sqlite"), "engine": engine.describe(),
              "configurations": len(points), "seconds": round(time.perf_counter() - start, 1)}
    (out / "results.json").write_text(json.dumps(result, indent=1, sort_keys=True, default=float) + "\n")
    return result


def _search(mp_search: str, metric: str, value: str, calibration, model: str, space: SearchSpace, base: Program,
            hw: HardwareConfig, hardware: list[HardwareConfig], sensitivity: Sensitivity, seed: int, out: Path,
            images: np.ndarray, labels: np.ndarray, points: list[dict[str, Any]], say) -> dict[str, Any]:
    """One mixed-precision search under the budget on ``hw``; its program's points join ``points``."""
    fitness = sensitivity.fitness
    b = Budget(metric, 0.0, space, base, hw)
    limit_value = b.limit = _budget_limit(metric, value, calibration, model, b, hw)
    say(f"explore: {mp_search} search on {hw.name}, {b.describe()}")
    t0 = time.perf_counter()
    # The search prices configurations by re-bit-widthing one program (hwsim.cost.rebit), which cannot know
    # the data-dependent PTF shifts that calibration picks at each width (a few 0.1 % of accumulate energy).
    # The limit holds for the lowered program: if it is over, search again under a limit lowered by the excess.
    for _ in range(5):
        if mp_search == "greedy":
            config, trace = greedy_search(sensitivity, b)
            history = [{"layer": s.layer, "wbits": s.wbits, "abits": s.abits, "budget_value": s.budget_value}
                       for s in trace]
        else:
            config, history = coarse_to_fine(sensitivity, b, seed=seed)
        program = quantize_calibrated(calibration, to_map(config), model).export()
        lowered = _lowered_value(metric, program, config, b, hw)
        if lowered <= limit_value * (1 + 1e-9):
            break
        b.limit -= lowered - limit_value
    else:
        raise QuantError(f"the {mp_search} search could not bring the lowered program under {limit_value:.4g}")
    path = _greedy_path(sensitivity, trace, base, hw) if mp_search == "greedy" else None
    full = space.full(config)
    mp_path = out / f"mp_{mp_search}_{hw.name}.yaml"
    to_map(config).save(mp_path)
    save(program, out / f"mp_{mp_search}_{hw.name}.vitp")
    top1 = _accuracy(program, images, labels)
    label = f"MP-{mp_search}@{hw.name}"
    for target in hardware:
        points.append(_point(label, "mixed", program, target, top1, full))
    score = fitness.score(config)
    say(f"explore: {label}: top-1 {100 * top1:.2f} % on {len(labels)} test images, {metric} "
        f"{lowered:.4g} (limit {limit_value:.4g}); map {mp_path}")
    return {"search": mp_search, "hw": hw.name, "budget": f"{metric} <= {limit_value:g}",
            "budget_limit": limit_value, "budget_value": lowered, "held_out_top1": score.top1,
            "held_out_loss": score.cross_entropy, "held_out_kl": score.kl,
            "objective": fitness.objective, "map": str(mp_path),
            "fitness_evaluations": fitness.evaluations, "seconds": round(time.perf_counter() - t0, 1),
            "history": history, "path": path}


PATH_POINTS = 8   # configurations of a greedy trajectory evaluated on held-out images: its front


def _pricing(space: SearchSpace, base: Program, hw: HardwareConfig) -> tuple[Budget, Budget]:
    """Energy and latency of configurations on ``hw`` (Budget objects used for their cached pricing only)."""
    return Budget("energy", math.inf, space, base, hw), Budget("latency", math.inf, space, base, hw)


def _greedy_path(sensitivity: Sensitivity, trace, base: Program, hw: HardwareConfig) -> list[dict[str, Any]]:
    """``PATH_POINTS`` configurations spread along the greedy trajectory (its last one included), evaluated on the
    held-out images (``PATH_POINTS`` more evaluations): Greedy MP's front, to compare with NSGA-II's."""
    fitness = sensitivity.fitness
    configs = trajectory(fitness.space, trace)
    if not configs:
        return []
    picks = sorted({round(i * (len(configs) - 1) / (PATH_POINTS - 1)) for i in range(PATH_POINTS)})
    chosen = [configs[i] for i in picks]
    fitness.prefetch(chosen)
    energy, latency = _pricing(fitness.space, base, hw)
    return [{"step": i + 1, "held_out_top1": fitness.score(c).top1, "energy_uj": energy.value(c),
             "latency_ms": latency.value(c)} for i, c in zip(picks, chosen)]


FRONT_POINTS = 6  # NSGA-II front configurations per hardware measured on the test subset like the grid's


def _nsga(fitness: HeldOutFitness, base: Program, hardware: list[HardwareConfig], trials: int, population: int,
          seed: int, study: str, out: Path, searches: list[dict[str, Any]], say) -> dict[str, Any]:
    """The NSGA-II study, its front per hardware, and its comparison with the greedy searches' fronts (hypervolume of
    held-out top-1 vs energy, reference: top-1 0 at the 8-bit model's energy; and how many greedy points it covers).
    The comparison is quant.search.nsga.compare_fronts."""
    t0 = time.perf_counter()
    space = fitness.space
    pricing = {hw.name: _pricing(space, base, hw) for hw in hardware}
    say(f"explore: NSGA-II (Optuna) over per-layer bits x {len(hardware)} hardware, {trials} trials, "
        f"population {population}")
    tp = nsga_search(fitness, pricing, trials, f"sqlite:///{(out / 'optuna.db').resolve()}", study, seed, population,
                     on_generation=lambda g, n: say(f"explore: NSGA-II generation {g}: {n}/{trials} trials"))
    per_hw, front_configs = [], {}
    for hw in hardware:
        energy = pricing[hw.name][0]
        priced = [(p.top1, energy.value(p.config), p) for p in tp]   # every trial's configuration on this hardware
        front = front_2d([(t, e) for t, e, _ in priced])
        ref = (0.0, energy.value(space.uniform(8, 8)) * (1 + 1e-9))
        entry = {"hw": hw.name, "front": [{"held_out_top1": t, "energy_uj": e} for t, e in front],
                 "hypervolume": hypervolume_2d(front, *ref)}
        greedy = next((s for s in searches if s["hw"] == hw.name and s.get("path")), None)
        if greedy is not None:
            g_front = front_2d([(q["held_out_top1"], q["energy_uj"]) for q in greedy["path"]])
            entry.update(greedy_path=[{"held_out_top1": q["held_out_top1"], "energy_uj": q["energy_uj"]}
                                      for q in greedy["path"]],
                         greedy_front=[{"held_out_top1": t, "energy_uj": e} for t, e in g_front],
                         greedy_hypervolume=hypervolume_2d(g_front, *ref), greedy_evaluations=greedy["fitness_evaluations"],
                         **compare_fronts(front, g_front, ref, len(fitness.labels)))
        per_hw.append(entry)
        on_front = [p for t, e, p in priced if (t, e) in set(front)]
        picks = sorted({round(i * (len(on_front) - 1) / (FRONT_POINTS - 1)) for i in range(FRONT_POINTS)}) if on_front else []
        for i in picks:
            p = on_front[i]
            front_configs.setdefault(tuple(sorted((n, b["wbits"], b["abits"]) for n, b in p.config.items())),
                                     {"label": f"NSGA-{p.number}", "config": p.config})
    return {"trials": len(tp), "population": population, "evaluations": fitness.evaluations,
            "storage": str(out / "optuna.db"), "study": study, "per_hw": per_hw,
            "trial_points": [{"number": p.number, "hw": p.hw, "held_out_top1": p.top1, "energy_uj": p.energy_uj,
                              "latency_ms": p.latency_ms} for p in tp],
            "front": list(front_configs.values()), "seconds": round(time.perf_counter() - t0, 1)}


CSV_FIELDS = ("config", "kind", "hw", "top1", "energy_uj", "latency_ms", "cycles", "dram_bytes", "area_mm2",
              "mean_wbits", "mean_abits", "pareto_energy", "pareto_latency")


def _write_csv(points: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(points)

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
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.arch import HardwareConfig, load_hardware
from hwsim.cost import cost
from hwsim.ir import Program, save
from models.data import calibration_data, eval_data, held_out_data
from models.progress import progress as show
from models.registry import create_model
from quant.build import default_map, quantize_calibrated
from quant.calibrate import calibrate
from quant.methods import get_method
from quant.parts import QuantError
from quant.search.budget import METRICS, Budget
from quant.search.coarse_to_fine import coarse_to_fine
from quant.search.fitness import HeldOutFitness, integer_logits
from quant.search.greedy import greedy_search
from quant.search.sensitivity import Sensitivity
from quant.search.space import SearchSpace, to_map
from vitsim.pipelines import default_data

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
    return {"config": label, "kind": kind, "hw": hw.name, "top1": top1, "energy_uj": t["energy_uj"],
            "latency_ms": t["latency_ms"], "cycles": t["cycles"], "dram_bytes": t["dram_bytes"],
            "area_mm2": t["area_mm2"], "mean_wbits": round(float(wavg), 3), "mean_abits": round(float(aavg), 3),
            "energy_pj": t["energy_pj"], "bits": bits}


def explore(model: str, method: str, wbits: list[int], abits: list[int], hws: list[str], out_dir: str,
            mp_search: str | None = None, budget: str | None = None, limit: int = 2000, calib: int = 256,
            held_out: int = 512, seed: int = 0, data: str | None = None, progress: bool = True,
            hw_overrides: list[str] | None = None, objective: str = "kl") -> dict[str, Any]:
    start = time.perf_counter()
    if mp_search is not None and mp_search not in SEARCHES:
        raise QuantError(f"mixed-precision search {mp_search!r}, want one of {SEARCHES}")
    if mp_search is not None and budget is None:
        raise QuantError("--mp-search needs --budget (e.g. energy=W4A4, latency=0.5 or bits=5)")
    metric, value = parse_budget(budget) if budget else (None, None)
    hardware = [load_hardware(h, hw_overrides) for h in hws]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda s: print(s, flush=True)) if progress else (lambda s: None)

    net = create_model(model)
    data = data or default_data(model)
    calibration = calibrate(net, calibration_data(data, net, calib, seed), get_method(method), progress)
    images, labels = eval_data(data, net, limit)
    space = SearchSpace.from_layers(calibration.layers())
    points: list[dict[str, Any]] = []
    grid = [(w, a) for w in wbits for a in abits]
    base = None
    for w, a in show(grid, "explore: uniform grid", "config", progress):
        q = quantize_calibrated(calibration, default_map(w, a), model)
        program = q.export()
        base = base or program
        top1 = _accuracy(program, images, labels)
        for hw in hardware:
            points.append(_point(f"W{w}A{a}", "uniform", program, hw, top1, q.metadata["bits"]))
    searches = []
    if mp_search is not None:
        if base is None:
            base = quantize_calibrated(calibration, default_map(8, 8), model).export()
        hx, hy = held_out_data(data, net, held_out, calib, seed)
        fitness = HeldOutFitness(calibration, space, hx.numpy(), hy, model, objective)
        sensitivity = Sensitivity(fitness)
        targets = hardware if metric != "bits" else hardware[:1]
        for hw in targets:
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
            full = space.full(config)
            mp_path = out / f"mp_{mp_search}_{hw.name}.yaml"
            to_map(config).save(mp_path)
            save(program, out / f"mp_{mp_search}_{hw.name}.vitp")
            top1 = _accuracy(program, images, labels)
            label = f"MP-{mp_search}@{hw.name}"
            for target in hardware:
                points.append(_point(label, "mixed", program, target, top1, full))
            score = fitness.score(config)
            searches.append({"search": mp_search, "hw": hw.name, "budget": f"{metric} <= {limit_value:g}",
                             "budget_limit": limit_value, "budget_value": lowered, "held_out_top1": score.top1,
                             "held_out_loss": score.cross_entropy, "held_out_kl": score.kl,
                             "objective": fitness.objective, "map": str(mp_path),
                             "fitness_evaluations": fitness.evaluations, "seconds": round(time.perf_counter() - t0, 1),
                             "history": history})
            say(f"explore: {label}: top-1 {100 * top1:.2f} % on {len(labels)} test images, {metric} "
                f"{lowered:.4g} (limit {limit_value:.4g}); map {mp_path}")
    pareto = {"energy": pareto_front(points, "energy_uj"), "latency": pareto_front(points, "latency_ms")}
    for p in points:
        p["pareto_energy"] = any(p is q for q in pareto["energy"])
        p["pareto_latency"] = any(p is q for q in pareto["latency"])
    _write_csv(points, out / "points.csv")
    from vitsim.report import write_report

    report = write_report(points, searches, space, out, {"model": model, "method": method, "test_images": int(len(labels)),
                                                         "calibration_images": calib, "held_out_images": held_out})
    result = {"model": model, "method": method, "n": int(len(labels)), "points": points,
              "pareto": [{"config": p["config"], "hw": p["hw"], "top1": p["top1"], "energy_uj": p["energy_uj"],
                          "latency_ms": p["latency_ms"]} for p in pareto["energy"]],
              "searches": searches, "report": str(report), "csv": str(out / "points.csv"),
              "configurations": len(points), "seconds": round(time.perf_counter() - start, 1)}
    (out / "results.json").write_text(json.dumps(result, indent=1, sort_keys=True, default=float) + "\n")
    return result


CSV_FIELDS = ("config", "kind", "hw", "top1", "energy_uj", "latency_ms", "cycles", "dram_bytes", "area_mm2",
              "mean_wbits", "mean_abits", "pareto_energy", "pareto_latency")


def _write_csv(points: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(points)

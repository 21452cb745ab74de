"""NSGA-II over per-layer bits (quant.search.nsga) on the defined-loss model of test_search: the study starts from the
uniform configurations, finds configurations that beat them, resumes from its storage without re-counting, and the
front / hypervolume arithmetic matches hand computation."""
from __future__ import annotations

import math

import optuna
import pytest

from hwsim.arch import load_hardware
from quant.search.budget import Budget
from quant.search.nsga import compare_fronts, covered, front_2d, hypervolume_2d, nsga_search
from tests.quant.test_search import batched_fitness, chain_program


def _pricing(space):
    base = chain_program()
    return {name: (Budget("energy", math.inf, space, base, load_hardware(name)),
                   Budget("latency", math.inf, space, base, load_hardware(name))) for name in ("edge-8x8", "16x16")}


def _top1_fitness(batches):
    """The defined loss as a 'top-1' in (0, 1]: the study maximises it."""
    fitness = batched_fitness(batches)
    inner = fitness.runner

    def runner(configs):
        return [type(s)(s.loss, 1.0 / (1.0 + s.loss / 100.0), 0.0, 0.0) for s in inner(configs)]

    fitness.runner = runner
    return fitness


def test_study_starts_uniform_improves_and_resumes(tmp_path):
    batches: list[int] = []
    fitness = _top1_fitness(batches)
    pricing = _pricing(fitness.space)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = nsga_search(fitness, pricing, 40, storage, "s", seed=3, population=8)
    assert len(first) == 40 and [p.number for p in first] == list(range(40))
    widths = sorted(fitness.space.choices, reverse=True)
    # the first trials: uniform maps of the (weight width x activation width) grid on every hardware, widest first
    grid = [(p.hw, {b["wbits"] for b in p.config.values()}, {b["abits"] for b in p.config.values()}) for p in first]
    assert all(len(w) == len(a) == 1 for _, w, a in grid)
    pairs = [(hw, *w, *a) for hw, w, a in grid]
    assert len(set(pairs)) == len(pairs) == 40 and pairs[:2] == [(hw, widths[0], widths[0]) for hw in pricing]
    assert any(w != a for _, w, a in pairs)    # off the diagonal too
    assert [w + a for _, w, a in pairs] == sorted((w + a for _, w, a in pairs), reverse=True)
    assert max(batches) == 4  # generations of 8 evaluated as batches: one map on both hardware evaluated once
    # a trial left running by an interrupted run (here one of the grid's) is failed, not counted, and asked again;
    # the study resumes to 120 trials: the whole grid, then generations bred from it
    study = optuna.load_study(study_name="s", storage=storage)
    study.ask()
    again = nsga_search(_top1_fitness([]), pricing, 120, storage, "s", seed=3, population=8)
    assert len(again) == 120 and [(p.number, p.top1) for p in again[:40]] == [(p.number, p.top1) for p in first]
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert states.count(optuna.trial.TrialState.COMPLETE) == 120

    def uniform(p):
        w, a = {b["wbits"] for b in p.config.values()}, {b["abits"] for b in p.config.values()}
        return (p.hw, *w, *a) if len(w) == len(a) == 1 else None

    assert {uniform(p) for p in again} >= {(hw, w, a) for hw in pricing for w in widths for a in widths}
    # something bred beats the uniform 4-bit configuration on both top-1 and energy
    u4 = next(p for p in again if uniform(p) == ("16x16", 4, 4))
    bred = [p for p in again if uniform(p) is None and p.hw == "16x16"]
    assert any(p.top1 >= u4.top1 and p.energy_uj <= u4.energy_uj and (p.top1 > u4.top1 or p.energy_uj < u4.energy_uj)
               for p in bred)


def test_front_and_hypervolume_by_hand():
    points = [(0.9, 10.0), (0.8, 5.0), (0.85, 12.0), (0.7, 5.0)]
    assert front_2d(points) == [(0.8, 5.0), (0.9, 10.0)]   # (0.85, 12) and (0.7, 5) are beaten
    # strips: cost 5..10 at top-1 0.8, cost 10..20 at 0.9
    assert hypervolume_2d(points, 0.0, 20.0) == pytest.approx(5 * 0.8 + 10 * 0.9)
    assert hypervolume_2d(points, 0.85, 20.0) == pytest.approx(10 * 0.05)   # only (0.9, 10) is above the reference
    assert covered([(0.8, 5.0), (0.95, 30.0)], points) == 0.5


def test_fronts_compared_on_the_shared_range_with_a_one_image_tolerance():
    """By hand, reference (0, 10), 100 held-out images (resolution: (10 - 4) / 100 = 0.06 on the range from the
    greedy front's cheapest point, 4, up). NSGA-II's point below that range is clipped to it, not credited."""
    greedy = [(0.9, 4.0), (0.95, 8.0)]                       # HV: 0.9 * 4 + 0.95 * 2 = 5.5
    cheap_but_equal = [(0.5, 1.0), (0.9, 4.0), (0.95, 8.0)]  # the 0.5 point is beaten at the clip: still 5.5
    r = compare_fronts(cheap_but_equal, greedy, (0.0, 10.0), 100)
    assert r["better"] == "match" and math.isclose(r["shared_hypervolume"], 5.5) and r["greedy_points_covered"] == 1.0
    slightly = [(0.9, 4.0), (0.96, 8.0)]                     # +0.02: within one image's worth
    assert compare_fronts(slightly, greedy, (0.0, 10.0), 100)["better"] == "match"
    better = [(0.92, 4.0), (0.96, 8.0)]                      # +0.08 + 0.02 = +0.10 > 0.06
    assert compare_fronts(better, greedy, (0.0, 10.0), 100)["better"] == "NSGA-II"
    worse = [(0.88, 4.0), (0.95, 8.0)]                       # -0.08
    r = compare_fronts(worse, greedy, (0.0, 10.0), 100)
    assert r["better"] == "greedy" and r["greedy_points_covered"] == 0.5

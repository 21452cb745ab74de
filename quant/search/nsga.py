"""Multi-objective mixed-precision search with Optuna's NSGA-II (Deb et al., "A fast and elitist multiobjective genetic
algorithm: NSGA-II", IEEE TEVC 2002; ``optuna.samplers.NSGAIISampler``), over per-layer weight and activation widths
and the hardware configuration, with three objectives: held-out integer top-1 (maximised; quant.search.fitness runs
hwsim), energy and latency of one inference (minimised; hwsim's cost model on the re-bit-widthed program, as the
budgets of the other searches price them).

- Generations are asked as one batch (``study.ask``), evaluated together (``HeldOutFitness.prefetch``: in parallel on
  Dask workers when the fitness has a runner) and told back in trial order, so the study is reproducible for a seed.
- The first generation starts from the uniform configurations (every weight width with every activation width of the
  space, on every hardware): the grid a designer would try first, so the front is never worse than the uniform grid,
  and the off-diagonal maps (W4A6, W6A4, ...) give the crossover parents between the diagonal's energies.
- The study lives in Optuna's storage (SQLite in the output folder): running the same search again resumes it; trials
  interrupted mid-generation are marked failed and not counted (a uniform one is asked again); several processes may
  share one study.
- Unlike Greedy MP and coarse-to-fine (the papers' single-budget searches), one run yields a whole front.
Nothing here is tuned on test images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from quant.search.budget import Budget
from quant.search.fitness import HeldOutFitness
from quant.search.space import Config

DIRECTIONS = ("maximize", "minimize", "minimize")   # held-out top-1, energy (uJ), latency (ms)


@dataclass(frozen=True)
class TrialPoint:
    number: int
    config: Config
    hw: str
    top1: float            # held-out integer top-1
    energy_uj: float
    latency_ms: float


def _config(trial, layers: tuple[str, ...], choices: tuple[int, ...]) -> Config:
    return {n: {"wbits": trial.suggest_categorical(f"{n}:w", list(choices)),
                "abits": trial.suggest_categorical(f"{n}:a", list(choices))} for n in layers}


def nsga_search(fitness: HeldOutFitness, pricing: dict[str, tuple[Budget, Budget]], trials: int, storage: str,
                study_name: str, seed: int = 0, population: int = 24,
                on_generation: Callable[[int, int], None] | None = None) -> list[TrialPoint]:
    """Run (or resume) the study until it has ``trials`` completed trials; every completed trial, in trial order.
    ``pricing``: hardware name -> (energy budget, latency budget) objects, used for their ``value`` only."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = fitness.space
    hws = list(pricing)
    study = optuna.create_study(study_name=study_name, storage=storage, directions=list(DIRECTIONS),
                                sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=seed),
                                load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)   # left by an interrupted run: not evaluated, not counted
        if "fixed_params" in t.system_attrs:           # one of the uniform grid's: asked again
            study.enqueue_trial(t.system_attrs["fixed_params"])
    if not study.trials:
        grid = sorted(((w, a) for w in space.choices for a in space.choices), key=lambda wa: (-sum(wa), -wa[0]))
        for w, a in grid:   # widest first (by w + a; wider weights first on ties)
            for hw in hws:
                params = {"hw": hw, **{f"{n}:w": w for n in space.layers}, **{f"{n}:a": a for n in space.layers}}
                study.enqueue_trial(params)

    def done() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    generation = 0
    while done() < trials:
        batch = [study.ask() for _ in range(min(population, trials - done()))]
        configs = [_config(t, space.layers, space.choices) for t in batch]
        chosen = [t.suggest_categorical("hw", hws) for t in batch]
        fitness.prefetch(configs)
        for trial, config, hw in zip(batch, configs, chosen):
            energy, latency = pricing[hw]
            study.tell(trial, [fitness.score(config).top1, energy.value(config), latency.value(config)])
        generation += 1
        if on_generation is not None:
            on_generation(generation, done())
    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        config = {n: {"wbits": t.params[f"{n}:w"], "abits": t.params[f"{n}:a"]} for n in space.layers}
        points.append(TrialPoint(t.number, config, t.params["hw"], *t.values))
    return sorted(points, key=lambda p: p.number)[:trials]


def front_2d(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (top-1, cost) points no other point beats on both (higher top-1, lower cost), by increasing cost."""
    front, best = [], -1.0
    for top1, c in sorted(points, key=lambda p: (p[1], -p[0])):
        if top1 > best:
            front.append((top1, c))
            best = top1
    return front


def hypervolume_2d(points: list[tuple[float, float]], ref_top1: float, ref_cost: float) -> float:
    """Area dominated by ``points`` (maximise top-1, minimise cost) and bounded by the reference point."""
    # by increasing cost: each front point owns the strip up to the next point's cost
    front = front_2d([p for p in points if p[0] > ref_top1 and p[1] < ref_cost])
    area = 0.0
    for i, (top1, c) in enumerate(front):
        next_cost = front[i + 1][1] if i + 1 < len(front) else ref_cost
        area += (next_cost - c) * (top1 - ref_top1)
    return area


def covered(front: list[tuple[float, float]], by: list[tuple[float, float]]) -> float:
    """The fraction of ``front``'s points that some point of ``by`` matches or beats on both axes."""
    if not front:
        return 1.0
    return sum(any(t >= top1 and c <= cost for t, c in by) for top1, cost in front) / len(front)


def compare_fronts(front: list[tuple[float, float]], other: list[tuple[float, float]], ref: tuple[float, float],
                   images: int) -> dict[str, object]:
    """``front`` (NSGA-II's) against ``other`` (a single-budget search's path, e.g. Greedy MP's), both (top-1, cost)
    fronts, on the costs both reach: from ``other``'s cheapest point up to the reference cost, so that a front is not
    called better for reaching configurations the other search was not asked for (``front``'s cheaper points count
    as if they cost that much). ``better`` is the front with the larger hypervolume there, or "match" when the two
    differ by no more than one of the ``images`` held-out images' top-1 over that range: the fitness cannot tell
    them apart. Also: the share of ``other``'s points that ``front`` matches or beats."""
    low = min(c for _, c in other)
    shared = hypervolume_2d([(t, max(c, low)) for t, c in front], *ref)
    other_hv = hypervolume_2d(other, *ref)
    resolution = (ref[1] - low) / images
    gap = shared - other_hv
    return {"shared_range_uj": [low, ref[1]], "shared_hypervolume": shared, "greedy_shared_hypervolume": other_hv,
            "hypervolume_resolution": resolution, "greedy_points_covered": covered(other, front),
            "better": "match" if abs(gap) <= resolution else ("NSGA-II" if gap > 0 else "greedy")}

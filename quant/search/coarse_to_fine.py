"""P^2-ViT's coarse-to-fine mixed-precision search (Shi et al., IEEE TVLSI 2024): {4, 8} bits per layer pair of each
block ((qkv, proj), (fc1, fc2), and here also the attention products (matmul_qk, matmul_av)), weights and activations
chosen per pair, under a budget.

- Coarse: ``samples`` random configurations that fit the budget, scored by a cheap proxy, and the best ``population``
  kept. P^2-ViT scores with a Hessian-trace-weighted weight error; we use the measured single-layer loss increases
  summed over layers (quant.search.sensitivity), which needs 2 held-out evaluations per layer at 4 bits.
- Fine: an evolutionary search (P^2-ViT: population 25, 8 generations) on the real held-out loss from hwsim: each
  generation keeps the best half, and fills the rest with uniform crossover of two parents and a mutation that flips
  one pair's width; children over budget are repaired by lowering the pair operand with the least sensitivity.
Seeded; nothing is tuned on test images.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from quant.search.budget import Budget
from quant.search.greedy import KINDS, SearchError
from quant.search.sensitivity import Sensitivity
from quant.search.space import Config

PAIR_WIDTHS = (4, 8)
PAIRS = (("attn.qkv", "attn.proj"), ("mlp.fc1", "mlp.fc2"), ("attn.matmul_qk", "attn.matmul_av"))


def layer_groups(layers: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The searched layers grouped in P^2-ViT's pairs (per block); a layer outside any pair is its own group."""
    groups, seen = [], set()
    for name in layers:
        if name in seen:
            continue
        prefix = re.sub(r"\.(attn|mlp)\..*$", "", name)
        group = (name,)
        for a, b in PAIRS:
            if name.endswith("." + a) and f"{prefix}.{b}" in layers:
                group = (name, f"{prefix}.{b}")
        groups.append(group)
        seen.update(group)
    return groups


@dataclass
class Genome:
    genes: tuple[tuple[int, int], ...]   # per group: (wbits, abits)

    def config(self, groups: list[tuple[str, ...]]) -> Config:
        return {name: {"wbits": w, "abits": a} for group, (w, a) in zip(groups, self.genes) for name in group}


def coarse_to_fine(sensitivity: Sensitivity, budget: Budget, samples: int = 400, population: int = 25,
                   generations: int = 8, seed: int = 0, on_generation: Callable[[int, float], None] | None = None
                   ) -> tuple[Config, list[dict]]:
    fitness = sensitivity.fitness
    groups = layer_groups(fitness.space.layers)
    rng = np.random.default_rng(seed)

    def estimate(g: Genome) -> float:
        return sum(sensitivity.delta(n, kind, b[kind]) for n, b in g.config(groups).items() for kind in KINDS)

    def repair(g: Genome) -> Genome | None:
        """Lower the 8-bit pair operand whose 4-bit loss increase is least until the genome fits the budget."""
        genes = list(g.genes)
        while not budget.fits(Genome(tuple(genes)).config(groups)):
            options = [(i, j) for i, gene in enumerate(genes) for j in (0, 1) if gene[j] == 8]
            if not options:
                return None
            i, j = min(options, key=lambda o: sum(sensitivity.delta(n, KINDS[o[1]], 4) for n in groups[o[0]]))
            genes[i] = tuple(4 if k == j else genes[i][k] for k in (0, 1))
        return Genome(tuple(genes))

    # the single-layer 4-bit sensitivities the coarse ranking and the repairs read, measured in one batch
    sensitivity.prefetch([(n, kind, 4) for n in fitness.space.layers for kind in KINDS])
    # coarse: random configurations in budget, ranked by the additive sensitivity estimate
    pool: dict[tuple, Genome] = {}
    for _ in range(samples):
        g = repair(Genome(tuple((int(rng.choice(PAIR_WIDTHS)), int(rng.choice(PAIR_WIDTHS))) for _ in groups)))
        if g is not None:
            pool[g.genes] = g
    if not pool:
        raise SearchError(f"no {{4, 8}}-bit pair configuration fits {budget.describe()}")
    ranked = sorted(pool.values(), key=estimate)[:population]
    history = []

    # fine: evolution on the real held-out loss
    def real(g: Genome) -> float:
        return fitness.loss(g.config(groups))

    fitness.prefetch([g.config(groups) for g in ranked])
    current = sorted(ranked, key=real)
    for gen in range(generations):
        parents = current[: max(2, len(current) // 2)]
        children: dict[tuple, Genome] = {g.genes: g for g in parents}
        tries = 0
        while len(children) < population and tries < 20 * population:
            tries += 1
            a, b = (parents[i] for i in rng.choice(len(parents), 2, replace=len(parents) < 2))
            genes = [a.genes[i] if rng.random() < 0.5 else b.genes[i] for i in range(len(groups))]
            i, j = int(rng.integers(len(groups))), int(rng.integers(2))
            genes[i] = tuple((12 - genes[i][k]) if k == j else genes[i][k] for k in (0, 1))  # 4 <-> 8
            child = repair(Genome(tuple(genes)))
            if child is not None:
                children[child.genes] = child
        fitness.prefetch([g.config(groups) for g in children.values()])
        current = sorted(children.values(), key=real)[:population]
        best = current[0]
        history.append({"generation": gen + 1, "best_loss": real(best), "evaluations": fitness.evaluations,
                        "budget_value": budget.value(best.config(groups))})
        if on_generation is not None:
            on_generation(gen + 1, real(best))
    return current[0].config(groups), history


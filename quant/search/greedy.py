"""MPTQ-ViT's Greedy mixed precision (Tai et al., "MPTQ-ViT", 2024; no public code, our reading): start with every
searchable layer at 8 bits and repeatedly lower the one (layer, weights or activations) step whose next-narrower width
costs the least loss per unit of budget saved, until the configuration fits the budget.

The loss change of a step comes from the measured single-layer sensitivities (quant.search.sensitivity); the budget
saved is exact (quant.search.budget: average bits, or energy / latency from hwsim's cost model: hardware-aware).
Nothing here is tuned on test images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from quant.search.budget import Budget
from quant.search.sensitivity import Sensitivity
from quant.search.space import Config

KINDS = ("wbits", "abits")


class SearchError(ValueError):
    """A budget no configuration of the space fits (a user error)."""


@dataclass
class GreedyStep:
    layer: str
    kind: str
    bits: int
    budget_value: float
    estimated_loss_increase: float


def greedy_search(sensitivity: Sensitivity, budget: Budget, on_step: Callable[[GreedyStep], None] | None = None
                  ) -> tuple[Config, list[GreedyStep]]:
    space = sensitivity.fitness.space
    config = space.uniform(8, 8)
    steps: list[GreedyStep] = []
    current = budget.value(config)
    while current > budget.limit * (1 + 1e-9):
        best, best_ratio = None, float("inf")
        for layer in space.layers:
            for kind in KINDS:
                bits = config[layer][kind]
                lower = space.lower(bits)
                if lower is None:
                    continue
                candidate = {**config, layer: {**config[layer], kind: lower}}
                saved = current - budget.value(candidate)
                if saved <= 0:
                    continue
                loss = max(sensitivity.delta(layer, kind, lower) - sensitivity.delta(layer, kind, bits), 0.0)
                ratio = (loss + 1e-6) / saved
                if ratio < best_ratio:
                    best, best_ratio = (candidate, layer, kind, lower), ratio
        if best is None:
            raise SearchError(f"no configuration fits {budget.describe()}: the narrowest reaches {current:.4g}")
        config, layer, kind, lower = best
        current = budget.value(config)
        steps.append(GreedyStep(layer, kind, lower, current, sensitivity.estimate(config)))
        if on_step is not None:
            on_step(steps[-1])
    return config, steps

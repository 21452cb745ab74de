"""MPTQ-ViT's Greedy mixed precision (Tai et al., "MPTQ-ViT", 2024; no public code, our reading): start with every
searchable layer at 8 bits and repeatedly take the step that costs the least loss per unit of budget saved, until the
configuration fits the budget. A step lowers one layer's weights or activations to the next-narrower width, both by
one width, or both to the array's packed width (hwsim.cost.cycles.PACKED_MAX_BITS): a latency budget on an array whose
narrow mode needs both operands narrow saves nothing by one operand alone, and the joint steps cross that plateau.

The loss change of a step comes from the measured single-layer sensitivities (quant.search.sensitivity); the budget
saved is exact (quant.search.budget: average bits, or energy / latency from hwsim's cost model: hardware-aware).
Nothing here is tuned on test images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hwsim.cost.cycles import PACKED_MAX_BITS
from quant.search.budget import Budget
from quant.search.sensitivity import Sensitivity
from quant.search.space import Config, SearchSpace

KINDS = ("wbits", "abits")


class SearchError(ValueError):
    """A budget no configuration of the space fits (a user error)."""


@dataclass
class GreedyStep:
    layer: str
    wbits: int
    abits: int
    budget_value: float
    estimated_loss_increase: float


def _steps(space: SearchSpace, bits: dict[str, int]) -> list[dict[str, int]]:
    """The widths one step can move a layer to (see the module docstring)."""
    w, a = bits["wbits"], bits["abits"]
    lw, la = space.lower(w), space.lower(a)
    packed = max((b for b in space.choices if b <= PACKED_MAX_BITS), default=None)
    moves = [{"wbits": lw, "abits": a}, {"wbits": w, "abits": la}, {"wbits": lw, "abits": la}]
    if packed is not None:
        moves.append({"wbits": min(w, packed), "abits": min(a, packed)})
    out = []
    for m in moves:
        if m["wbits"] is not None and m["abits"] is not None and m != bits and m not in out:
            out.append(m)
    return out


def greedy_search(sensitivity: Sensitivity, budget: Budget, on_step: Callable[[GreedyStep], None] | None = None
                  ) -> tuple[Config, list[GreedyStep]]:
    space = sensitivity.fitness.space
    config = space.uniform(8, 8)
    steps: list[GreedyStep] = []
    current = budget.value(config)
    while current > budget.limit * (1 + 1e-9):
        best, best_ratio = None, float("inf")
        candidates = []
        for layer in space.layers:
            for move in _steps(space, config[layer]):
                saved = current - budget.value({**config, layer: move})
                if saved > 0:
                    candidates.append((layer, move, saved))
        # the sensitivities this step reads, measured in one batch (in parallel when the fitness has a runner)
        sensitivity.prefetch([(layer, k, b[k]) for layer, move, _ in candidates for b in (move, config[layer])
                              for k in KINDS])
        for layer, move, saved in candidates:
            loss = sum(max(sensitivity.delta(layer, k, move[k]) - sensitivity.delta(layer, k, config[layer][k]), 0.0)
                       for k in KINDS)
            ratio = (loss + 1e-6) / saved
            if ratio < best_ratio:
                best, best_ratio = ({**config, layer: move}, layer, move), ratio
        if best is None:
            raise SearchError(f"no configuration fits {budget.describe()}: the narrowest reaches {current:.4g}")
        config, layer, move = best
        current = budget.value(config)
        steps.append(GreedyStep(layer, move["wbits"], move["abits"], current, sensitivity.estimate(config)))
        if on_step is not None:
            on_step(steps[-1])
    return config, steps


def trajectory(space: SearchSpace, steps: list[GreedyStep]) -> list[Config]:
    """The configuration after each step. Greedy's choices do not depend on the limit (a looser limit stops earlier on
    the same path), so these are its answers for every budget between 8 bits and the one it was given: its front."""
    config, out = space.uniform(8, 8), []
    for s in steps:
        config = {**config, s.layer: {"wbits": s.wbits, "abits": s.abits}}
        out.append(config)
    return out

"""Mixed-precision searches on a model whose loss we define: does each search spend the budget where it hurts least,
and does it stay within the budget? (The real held-out fitness runs in bench/explore.py and `vitsim explore`.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwsim.arch import load_hardware
from hwsim.ir import Op, Program, TensorSpec, validate
from quant.search.budget import Budget
from quant.search.coarse_to_fine import coarse_to_fine, layer_groups
from quant.search.fitness import HeldOutFitness, Score
from quant.search.greedy import SearchError, greedy_search
from quant.search.sensitivity import Sensitivity
from quant.search.space import SearchSpace, key, to_map

LAYERS = ["patch_embed.proj", "blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "head"]


def chain_program() -> Program:
    """Six Linear layers of 32 -> 32 on 16 tokens, each followed by a requant to 8 bits."""
    tensors = {"x": TensorSpec((16, 32), 8, True, exp=-4)}
    ops, constants, prev = [], {}, "x"
    for name in LAYERS:
        tensors[f"{name}.w"] = TensorSpec((32, 32), 8, True, exp=-6, constant=True)
        tensors[f"{name}.s"] = TensorSpec((1,), 8, True, constant=True)
        tensors[f"{name}.acc"] = TensorSpec((16, 32), 32, True)
        tensors[f"{name}.out"] = TensorSpec((16, 32), 8, True, exp=-4)
        constants[f"{name}.w"] = np.ones((32, 32), np.int64)
        constants[f"{name}.s"] = np.array([6])
        ops += [Op("Linear", name, (prev,), (f"{name}.acc",), {"weight": f"{name}.w"}, {"acc_bits": 32}),
                Op("Requant", f"{name}.rq", (f"{name}.acc",), (f"{name}.out",), {"shift": f"{name}.s"}, {"mode": "shift"})]
        prev = f"{name}.out"
    p = Program("chain", ["x"], [prev], tensors, ops, constants)
    validate(p)
    return p


class DefinedFitness:
    """Loss = sum over layers of weight * (8 - bits)^2: qkv is 20x as sensitive as the MLP."""

    weights = {"blocks.0.attn.qkv": 20.0, "blocks.0.attn.proj": 5.0, "blocks.0.mlp.fc1": 1.0, "blocks.0.mlp.fc2": 1.0}

    def __init__(self) -> None:
        self.space = SearchSpace.from_layers({n: "linear" for n in LAYERS})
        self.evaluations = 0

    def loss(self, config) -> float:
        self.evaluations += 1
        return defined_loss(config)

    def prefetch(self, configs) -> None:
        """Evaluated lazily, one configuration per ``loss`` call."""


def defined_loss(config) -> float:
    return sum(DefinedFitness.weights[n] * ((8 - b["wbits"]) ** 2 + (8 - b["abits"]) ** 2) for n, b in config.items())


def batched_fitness(batches: list[int]) -> HeldOutFitness:
    """The defined loss behind HeldOutFitness's batch path (as vitsim explore runs it on Dask workers)."""
    def runner(configs):
        batches.append(len(configs))
        return [Score(defined_loss(c), 0.0, 0.0, 0.0) for c in configs]

    return HeldOutFitness(None, DefinedFitness().space, None, None, runner=runner)


def test_batched_evaluation_gives_the_same_searches_with_the_same_evaluations():
    """Searches that measure each step's needs in one batch (prefetch) choose exactly what they choose measuring one
    configuration at a time, and measure no configuration the lazy search would not (nor any twice)."""
    class Counting(DefinedFitness):
        def __init__(self) -> None:
            super().__init__()
            self.seen = set()

        def loss(self, config) -> float:
            self.seen.add(key(config))
            self.evaluations = len(self.seen)
            return defined_loss(config)

    for search in ("greedy", "c2f"):
        lazy, batches = Counting(), []
        batched = batched_fitness(batches)
        results = []
        for fitness in (lazy, batched):
            budget = Budget("bits", 5.0, fitness.space, chain_program())
            results.append(greedy_search(Sensitivity(fitness), budget) if search == "greedy" else
                           coarse_to_fine(Sensitivity(fitness), budget, samples=50, population=6, generations=3, seed=1))
        assert results[0] == results[1], search
        assert batched.evaluations == len(lazy.seen) == sum(batches), search
        assert max(batches) > 1, search   # the steps' evaluations went out together


def test_space_fixes_first_and_last_layer_at_8_bits():
    space = DefinedFitness().space
    assert space.fixed == ("patch_embed.proj", "head") and space.layers == tuple(LAYERS[1:-1])
    assert space.lower(8) == 6 and space.lower(6) == 5 and space.lower(2) is None
    mp = to_map(space.uniform(4, 4)).resolve({n: "linear" for n in LAYERS})
    assert mp["head"] == {"wbits": 8, "abits": 8} and mp["blocks.0.mlp.fc1"] == {"wbits": 4, "abits": 4}


def test_bit_budget_is_the_size_weighted_average():
    fitness = DefinedFitness()
    budget = Budget("bits", 6.0, fitness.space, chain_program())
    config = fitness.space.uniform(8, 8)
    config["blocks.0.attn.qkv"] = {"wbits": 4, "abits": 8}
    # 4 layers of 1024 weights and 512 activations: one weight tensor at 4 bits
    assert budget.value(config) == pytest.approx((3 * 1024 * 8 + 1024 * 4 + 4 * 512 * 8) / (4 * 1536))


@pytest.mark.parametrize("metric", ["bits", "energy", "latency"])
def test_greedy_lowers_the_insensitive_layers_first_and_meets_the_budget(metric):
    fitness = DefinedFitness()
    sens = Sensitivity(fitness)
    hw = load_hardware("edge-8x8")
    base = chain_program()
    probe = Budget(metric, 0.0, fitness.space, base, hw)
    limit = (probe.value(fitness.space.uniform(8, 8)) + probe.value(fitness.space.uniform(4, 4))) / 2
    budget = Budget(metric, limit, fitness.space, base, hw)
    config, steps = greedy_search(sens, budget)
    assert budget.fits(config) and steps
    mlp = config["blocks.0.mlp.fc1"]["wbits"] + config["blocks.0.mlp.fc1"]["abits"]
    qkv = config["blocks.0.attn.qkv"]["wbits"] + config["blocks.0.attn.qkv"]["abits"]
    assert mlp < qkv
    # the search stops as soon as the budget is met: the configuration before the last step did not fit
    last = steps[-1]
    before = [s for s in steps[:-1] if s.layer == last.layer]
    undone = {**config, last.layer: ({"wbits": before[-1].wbits, "abits": before[-1].abits} if before
                                      else {"wbits": 8, "abits": 8})}
    assert not budget.fits(undone)


def test_greedy_reports_an_unreachable_budget():
    fitness = DefinedFitness()
    with pytest.raises(SearchError, match="no configuration fits"):
        greedy_search(Sensitivity(fitness), Budget("bits", 1.0, fitness.space, chain_program()))


def test_coarse_to_fine_stays_in_budget_and_beats_the_uniform_4_bit_model():
    fitness = DefinedFitness()
    space = fitness.space
    assert layer_groups(space.layers) == [("blocks.0.attn.qkv", "blocks.0.attn.proj"), ("blocks.0.mlp.fc1", "blocks.0.mlp.fc2")]
    budget = Budget("bits", 6.0, space, chain_program())
    config, history = coarse_to_fine(Sensitivity(fitness), budget, samples=50, population=6, generations=3, seed=1)
    assert budget.fits(config) and len(history) == 3
    assert fitness.loss(config) < fitness.loss(space.uniform(4, 4))
    assert config["blocks.0.attn.qkv"] == {"wbits": 8, "abits": 8}  # the sensitive pair keeps 8 bits


def test_held_out_fitness_measures_the_distortion_from_the_float_model(deit_fmnist, p2vit_calibration):
    """The KL objective compares hwsim's output with the float model's (not the labels, not a quantized teacher):
    it is small and non-negative at 8 bits and grows at 4 bits, where the cross-entropy alone is too noisy to rank
    single layers."""
    from models.data import held_out_data

    images, labels = held_out_data("fmnist", deit_fmnist, 64, 128, seed=0)
    space = SearchSpace.from_layers(p2vit_calibration.layers())
    fitness = HeldOutFitness(p2vit_calibration, space, images.numpy(), labels, "deit_fmnist")
    with torch.no_grad():
        float_probs = torch.softmax(deit_fmnist(images).double(), 1)
    assert torch.allclose(fitness.teacher_log_probs().exp(), float_probs, atol=1e-4)
    w8, w4 = fitness.score(space.uniform(8, 8)), fitness.score(space.uniform(4, 4))
    assert 0 <= w8.kl < 0.5 * w4.kl
    assert fitness.loss(space.uniform(8, 8)) == w8.kl and w8.cross_entropy > w8.kl
    with pytest.raises(ValueError, match="objective"):
        HeldOutFitness(p2vit_calibration, space, images.numpy(), labels, objective="mse")

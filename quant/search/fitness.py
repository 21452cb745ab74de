"""Fitness of a bit-width configuration on held-out training images, measured by the integer simulator.

``HeldOutFitness.loss(config)`` quantizes the calibrated model at ``config`` (quant.build.quantize_calibrated: cached
scale choices make this cheap), lowers it, runs hwsim on the held-out images and returns the search objective:

- ``kl`` (default): the mean KL divergence KL(p_float || p_int) of the integer model's class probabilities from the
  float model's, the output-distortion sensitivity of ZeroQ (Cai et al., CVPR 2020) and of HAWQ-style searches. It
  is never negative and measures the quantization error alone, so a single layer's effect stands out of the noise:
  on 512 held-out deit_fmnist images, one layer's cross-entropy change is of the order of its sampling noise
  (+-0.004), and a search reading it lowers layers at random;
- ``ce``: the mean cross-entropy of the integer logits against the labels.

The cross-entropy and the top-1 are kept beside the objective. Results are cached per configuration. The held-out
images are training images outside the calibration set (models.data.held_out_data): searches never see test images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from hwsim import executor
from hwsim.ir import Program
from quant.build import quantize_calibrated
from quant.calibrate import Calibration
from quant.search.space import Config, SearchSpace, key, to_map


OBJECTIVES = ("kl", "ce")


@dataclass
class Score:
    loss: float          # the objective
    top1: float
    cross_entropy: float
    kl: float


def integer_logits(program: Program, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """The program's output as real numbers (codes times the output scale) for float ``images``."""
    spec = program.spec(program.outputs[0])
    scale = 2.0 ** spec.exp if spec.exp is not None else float(spec.scale or 1.0)
    out = [executor.run(program, executor.quantize_input(program, images[i:i + batch_size])).logits
           for i in range(0, len(images), batch_size)]
    codes = np.concatenate(out).reshape(len(images), -1).astype(np.float64)
    return (codes - spec.zero_point) * scale


def score_config(calibration: Calibration, config: Config, images: np.ndarray, labels: np.ndarray,
                 teacher: torch.Tensor, name: str = "model", objective: str = "kl") -> Score:
    """One evaluation: ``config`` quantized from ``calibration``, lowered, run by hwsim on the held-out ``images``, and
    compared with the float model's log-probabilities ``teacher``. A module-level function so that a Dask worker can
    run it (vitsim.engine) with the calibration and the images shipped to it once."""
    program = quantize_calibrated(calibration, to_map(config), name).export()
    logits = torch.from_numpy(integer_logits(program, images))
    target = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    ce = float(torch.nn.functional.cross_entropy(logits, target))
    kl = float((teacher.exp() * (teacher - torch.log_softmax(logits, 1))).sum(1).mean())
    top1 = float((logits.argmax(1) == target).double().mean())
    return Score(kl if objective == "kl" else ce, top1, ce, kl)


# Evaluates many configurations at once (e.g. on a Dask cluster: vitsim.explore); returns their scores in order.
BatchRunner = Callable[[list[Config]], list[Score]]


@dataclass
class HeldOutFitness:
    calibration: Calibration
    space: SearchSpace
    images: np.ndarray
    labels: np.ndarray
    name: str = "model"
    objective: str = "kl"
    cache: dict[tuple, Score] = field(default_factory=dict)
    evaluations: int = 0
    runner: BatchRunner | None = None   # None: evaluate in this process, one configuration at a time

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"fitness objective {self.objective!r}, want one of {OBJECTIVES}")
        self._teacher: torch.Tensor | None = None

    def teacher_log_probs(self) -> torch.Tensor:
        """The float model's log-probabilities on the held-out images (computed once)."""
        if self._teacher is None:
            gm = self.calibration.captured.gm
            with torch.no_grad():
                logits = torch.cat([gm(torch.from_numpy(self.images[i:i + 250]).float())
                                    for i in range(0, len(self.images), 250)])
            self._teacher = torch.log_softmax(logits.double(), 1)
        return self._teacher

    def prefetch(self, configs: list[Config]) -> None:
        """Evaluate every configuration of ``configs`` not yet cached, as one batch (in parallel with a ``runner``);
        a search calls this with what its next step will read, so the results do not depend on the runner."""
        todo, seen = [], set()
        for config in configs:
            k = key(config)
            if k not in self.cache and k not in seen:
                todo.append(config)
                seen.add(k)
        if not todo:
            return
        if self.runner is None:
            scores = [score_config(self.calibration, c, self.images, self.labels, self.teacher_log_probs(), self.name,
                                   self.objective) for c in todo]
        else:
            scores = self.runner(todo)
        for config, score in zip(todo, scores):
            self.cache[key(config)] = score
            self.evaluations += 1

    def score(self, config: Config) -> Score:
        self.prefetch([config])
        return self.cache[key(config)]

    def loss(self, config: Config) -> float:
        return self.score(config).loss

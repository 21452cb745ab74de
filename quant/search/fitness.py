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

    def program(self, config: Config) -> Program:
        return quantize_calibrated(self.calibration, to_map(config), self.name).export()

    def score(self, config: Config) -> Score:
        k = key(config)
        if k not in self.cache:
            logits = torch.from_numpy(integer_logits(self.program(config), self.images))
            labels = torch.from_numpy(np.asarray(self.labels, dtype=np.int64))
            ce = float(torch.nn.functional.cross_entropy(logits, labels))
            teacher = self.teacher_log_probs()
            kl = float((teacher.exp() * (teacher - torch.log_softmax(logits, 1))).sum(1).mean())
            top1 = float((logits.argmax(1) == labels).double().mean())
            self.cache[k] = Score(kl if self.objective == "kl" else ce, top1, ce, kl)
            self.evaluations += 1
        return self.cache[k]

    def loss(self, config: Config) -> float:
        return self.score(config).loss

"""Fitness of a bit-width configuration on held-out training images, measured by the integer simulator.

``HeldOutFitness.loss(config)`` quantizes the calibrated model at ``config`` (quant.build.quantize_calibrated: cached
scale choices make this cheap), lowers it, runs hwsim on the held-out images and returns the mean cross-entropy of the
integer logits against the labels; ``top1`` is kept beside it. Results are cached per configuration. The held-out
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


@dataclass
class Score:
    loss: float
    top1: float


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
    cache: dict[tuple, Score] = field(default_factory=dict)
    evaluations: int = 0

    def program(self, config: Config) -> Program:
        return quantize_calibrated(self.calibration, to_map(config), self.name).export()

    def score(self, config: Config) -> Score:
        k = key(config)
        if k not in self.cache:
            logits = torch.from_numpy(integer_logits(self.program(config), self.images))
            labels = torch.from_numpy(np.asarray(self.labels, dtype=np.int64))
            loss = float(torch.nn.functional.cross_entropy(logits, labels))
            self.cache[k] = Score(loss, float((logits.argmax(1) == labels).double().mean()))
            self.evaluations += 1
        return self.cache[k]

    def loss(self, config: Config) -> float:
        return self.score(config).loss

"""Baseline: min-max PTQ with float scales (symmetric; weights per output channel, activations per tensor, q/k/v per
head), requantized by dyadic multiply-shift as in I-ViT (Li & Gu, ICCV 2023). Softmax output is uniform."""
from __future__ import annotations

import torch

from quant.methods.base import Method
from quant.observers import Observer
from quant.parts import absmax_scale
from quant.scales import Scale


class MinMax(Method):
    name = "minmax"
    softmax_log2_bits = None

    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        return absmax_scale(weight.double().reshape(len(weight), -1).abs().amax(1), bits, True)

    def act_scale(self, obs: Observer, bits: int, signed: bool = True, consumer: torch.Tensor | None = None) -> Scale:
        return Scale(absmax_scale(obs.absmax, bits, signed))

    def head_scales(self, obs: Observer, bits: int, tokens: torch.Tensor | None = None,
                    partner: torch.Tensor | None = None) -> torch.Tensor:
        return absmax_scale(obs.absmax_c, bits, True)

"""Baseline: min-max PTQ with float scales (symmetric; weights per output channel, activations per tensor, q/k/v per
head), requantized by dyadic multiply-shift as in I-ViT (Li & Gu, ICCV 2023). Softmax output is uniform."""
from __future__ import annotations

import torch

from quant.methods.base import Method
from quant.observers import Observer
from quant.quantizer import Quantizer
from quant.scales import Scale


class MinMax(Method):
    name = "minmax"
    softmax_log2_bits = None

    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        return Quantizer(f"Int{bits}WeightPerChannelFloat").fit(weight).scale

    def act_scale(self, obs: Observer, bits: int, signed: bool = True, consumer: torch.Tensor | None = None) -> Scale:
        return Scale(Quantizer(f"{'' if signed else 'U'}Int{bits}ActPerTensorFloat").fit(obs).scale)

    def head_scales(self, obs: Observer, bits: int, tokens: torch.Tensor | None = None,
                    partner: torch.Tensor | None = None) -> torch.Tensor:
        return Quantizer(f"Int{bits}ActPerHeadFloat").fit(obs).scale

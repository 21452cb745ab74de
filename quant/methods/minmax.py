"""Baseline: min-max PTQ with float scales (symmetric; weights per output channel, activations per tensor, MatMul
operands per head), requantized by dyadic multiply-shift as in I-ViT (Li & Gu, ICCV 2023). Softmax output is uniform."""
from __future__ import annotations

import torch

from quant.methods.base import Method
from quant.observers import Observer
from quant.parts import absmax_scale
from quant.quantizer import Quantizer


class MinMax(Method):
    name = "minmax"
    softmax_log2_bits = None

    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        return Quantizer(f"Int{bits}WeightPerChannelFloat").fit(weight).scale

    def tensor_scale(self, obs: Observer, bits: int, signed: bool = True,
                     consumer: torch.Tensor | None = None) -> torch.Tensor:
        return Quantizer(f"{'' if signed else 'U'}Int{bits}ActPerTensorFloat").fit(obs).scale

    def per_head_scales(self, absmax: torch.Tensor, rows: torch.Tensor, bits: int,
                        partner: torch.Tensor | None = None) -> torch.Tensor:
        return absmax_scale(absmax, bits, True)

"""What a PTQ method decides: float re-parameterisation before calibration, and every scale.

quant.build asks the method for each scale in turn; internal 16-bit tensors (residual stream, attention logits, GELU
input) are powers of two in every method, because the integer nonlinear units take fractional-bit inputs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable

import torch

from quant.observers import Observer
from quant.parts import pot_ceil_exp
from quant.scales import Scale


class Method(ABC):
    name = "base"
    softmax_log2_bits: int | None = None  # None: uniform softmax output at the matmul's activation bits

    def prepare(self, model: torch.nn.Module, calib: list[torch.Tensor]) -> None:
        """Float re-parameterisation of ``model`` in place, before the calibration statistics are taken."""

    @abstractmethod
    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        """Per-output-channel scale of ``weight`` [out, ...]; ``inputs`` [rows, in] are calibration inputs (Linear)."""

    @abstractmethod
    def act_scale(self, obs: Observer, bits: int, signed: bool = True) -> Scale:
        """Per-tensor scale of an activation."""

    @abstractmethod
    def head_scales(self, obs: Observer, bits: int) -> torch.Tensor:
        """One scale per attention head (heads on the observer's last axis)."""

    def norm_out_scale(self, obs: Observer, bits: int) -> Scale:
        """Scale of a LayerNorm output: per tensor, or per channel (PTF)."""
        return self.act_scale(obs, bits)

    @staticmethod
    def internal_exp(absmax: torch.Tensor, bits: int = 16) -> int:
        """Power-of-two exponent covering ``absmax`` on a wide internal tensor (no clipping)."""
        return int(pot_ceil_exp(absmax, bits, True))


def batches(images: torch.Tensor, batch_size: int = 64) -> Iterable[torch.Tensor]:
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]

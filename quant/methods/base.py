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
    def act_scale(self, obs: Observer, bits: int, signed: bool = True, consumer: torch.Tensor | None = None) -> Scale:
        """Per-tensor scale of an activation; ``consumer`` is the weight [out, in] of the Linear reading it, if any."""

    @abstractmethod
    def head_scales(self, obs: Observer, bits: int, tokens: torch.Tensor | None = None,
                    partner: torch.Tensor | None = None) -> torch.Tensor:
        """One scale per attention head (heads on the observer's last axis). For q and k, ``tokens`` [rows, heads, d]
        are calibration rows of the operand itself and ``partner`` those of the other operand of Q.K^T."""

    def skewed_act(self, obs: Observer, bits: int, consumer: torch.Tensor | None = None) -> tuple[Scale, int]:
        """(scale, zero point) of a signed activation with a one-sided range (the GELU output); symmetric here."""
        return self.act_scale(obs, bits, consumer=consumer), 0

    def norm_out_scale(self, obs: Observer, bits: int, consumer: torch.Tensor | None = None) -> Scale:
        """Scale of a LayerNorm output: per tensor, or per channel (PTF); ``consumer`` as in ``act_scale``."""
        return self.act_scale(obs, bits, consumer=consumer)

    @staticmethod
    def internal_exp(absmax: torch.Tensor, bits: int = 16) -> int:
        """Power-of-two exponent covering ``absmax`` on a wide internal tensor (no clipping)."""
        return int(pot_ceil_exp(absmax, bits, True))


def batches(images: torch.Tensor, batch_size: int = 64) -> Iterable[torch.Tensor]:
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]

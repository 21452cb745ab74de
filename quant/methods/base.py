"""What a PTQ method decides: float re-parameterisations of the traced graph, and the scale of every site by role.

quant.formats asks the method for each site in turn (quant.fakequant.ActQuant roles): ``tensor_scale`` for a GEMM
operand per tensor, ``ptf_scale`` for a LayerNorm output read by a Linear (per-channel factors allowed),
``zero_point_scale`` for a one-sided activation (a zero point allowed), ``per_head_scales`` for MatMul operands, and
``weight_scale`` per output channel. Internal 16-bit tensors (residual stream, logits, GELU input) are powers of two in
every method, because the integer nonlinear units take fractional-bit inputs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from quant.observers import Observer
from quant.parts import pot_ceil_exp


class Method(ABC):
    name = "base"
    softmax_log2_bits: int | None = None  # None: uniform softmax output at the matmul's activation bits
    softmax_sqrt2 = False                 # log codes of base sqrt(2) (RepQ-ViT) instead of 2
    calibration_images = 256              # the default calibration set (vitsim quantize --calib)

    def softmax_code_bits(self, abits: int) -> int | None:
        """Width of the post-softmax log codes at a MatMul of ``abits``; None for uniform codes at ``abits``."""
        return self.softmax_log2_bits

    def softmax_uses_sqrt2(self, abits: int) -> bool:
        """Whether the post-softmax log codes at a MatMul of ``abits`` have base sqrt(2) (RepQ-ViT's) instead of 2."""
        return self.softmax_sqrt2

    def softmax_eta(self, obs: Observer, bits: int) -> int:
        """SULQ's shift of the post-softmax log codes, as eta / 2^12 (I&S-ViT); 0: plain log2 codes."""
        return 0

    def prepare(self, captured, calib: torch.Tensor) -> None:
        """Float re-parameterisation of the traced graph ``captured`` in place, before the sites are observed."""

    def refine(self, qg, calib: torch.Tensor, progress: bool = False) -> None:
        """After every scale is chosen at a bit-width map: learn on the fake-quant graph ``qg`` in place
        (reconstruction, quant.reconstruct); nothing here."""

    @abstractmethod
    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        """Per-output-channel scale of ``weight`` [out, ...]; ``inputs`` [rows, in] are calibration inputs (Linear)."""

    @abstractmethod
    def tensor_scale(self, obs: Observer, bits: int, signed: bool = True,
                     consumer: torch.Tensor | None = None) -> torch.Tensor:
        """Per-tensor scale of an activation; ``consumer`` is the weight [out, in] of the Linear reading it, if any."""

    @abstractmethod
    def per_head_scales(self, absmax: torch.Tensor, rows: torch.Tensor, bits: int,
                        partner: torch.Tensor | None = None) -> torch.Tensor:
        """One scale per head of a MatMul operand: ``absmax`` [heads], calibration ``rows`` [n, heads, k] of the
        operand; for Q.K^T, ``partner`` [n, heads, k] are rows of the other operand."""

    def zero_point_scale(self, obs: Observer, bits: int,
                         consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """(scale, zero point) of a signed activation with a one-sided range; symmetric (zero point 0) here."""
        return self.tensor_scale(obs, bits, consumer=consumer), 0

    def ptf_scale(self, obs: Observer, bits: int, consumer: torch.Tensor | None = None) -> torch.Tensor:
        """Scale of a LayerNorm output read by a Linear: per tensor here, per channel [C] (PTF) where a method says."""
        return self.tensor_scale(obs, bits, consumer=consumer)

    def ptf_format(self, obs: Observer, bits: int,
                   consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """(scale, zero point) of a LayerNorm output read by a Linear: ``ptf_scale`` without a zero point here; a
        per-tensor zero point is allowed (the integer LayerNorm adds it)."""
        return self.ptf_scale(obs, bits, consumer), 0

    @staticmethod
    def internal_exp(absmax: torch.Tensor, bits: int = 16) -> int:
        """Power-of-two exponent covering ``absmax`` on a wide internal tensor (no clipping)."""
        return int(pot_ceil_exp(absmax, bits, True))

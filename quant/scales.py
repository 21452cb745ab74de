"""Scales of quantized tensors and the requantization between them (shift when both are powers of two, else dyadic).

``Scale`` holds a float64 value per tensor or per channel along ``axis`` (per-sample axes, batch excluded).
``Requant`` is the integer op taking an accumulator at one scale to a code at another, executed identically by
fake-quant (here, in torch int64/float64) and by hwsim's Requant op.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from quant.parts import dyadic, is_pot, pot_exps, qrange


@dataclass(frozen=True)
class Scale:
    value: torch.Tensor  # float64, shape () or (channels,)
    axis: int = -1

    @staticmethod
    def power_of_two(exp: int | torch.Tensor, axis: int = -1) -> "Scale":
        return Scale(torch.exp2(torch.as_tensor(exp, dtype=torch.float64)), axis)

    @property
    def per_tensor(self) -> bool:
        return self.value.numel() == 1

    @property
    def pot(self) -> bool:
        return is_pot(self.value)

    def exps(self) -> torch.Tensor:
        return pot_exps(self.value)

    def __mul__(self, other: "Scale") -> "Scale":
        axis = self.axis if not self.per_tensor else other.axis
        return Scale(self.value * other.value, axis)


@dataclass(frozen=True)
class Requant:
    """acc (at ``src`` scale) -> clamp(round(acc * src / dst) + zero_point) as a shift or a dyadic multiply, per channel
    on ``axis``."""

    mode: str               # "shift" | "dyadic"
    shift: torch.Tensor     # int64 [channels] or [1]
    multiplier: torch.Tensor | None
    axis: int
    bits: int
    signed: bool
    zero_point: int = 0

    @staticmethod
    def between(src: Scale, dst: Scale, bits: int, signed: bool, zero_point: int = 0) -> "Requant":
        ratio = (src.value / dst.value).reshape(-1)
        axis = src.axis if not src.per_tensor else dst.axis
        if is_pot(ratio):
            return Requant("shift", -pot_exps(ratio), None, axis, bits, signed, zero_point)
        pairs = [dyadic(float(r)) for r in ratio]
        return Requant("dyadic", torch.tensor([p.shift for p in pairs]), torch.tensor([p.multiplier for p in pairs]),
                       axis, bits, signed, zero_point)

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if t.numel() == 1:
            return t.reshape(())
        shape = [1] * x.dim()
        shape[self.axis % (x.dim() - 1) + 1 if self.axis >= 0 else self.axis] = -1
        return t.reshape(shape)

    def __call__(self, acc: torch.Tensor) -> torch.Tensor:
        """Integer codes (float64 tensor) of the requantized accumulator ``acc`` [batch, ...]."""
        lo, hi = qrange(self.bits, self.signed)
        if self.mode == "shift":
            # floor(acc * 2^-s + 1/2) is exact in float64 and equals (acc + 2^(s-1)) >> s.
            y = torch.floor(acc * torch.exp2(-self._view(self.shift, acc).double()) + 0.5)
        else:
            s = self._view(self.shift, acc)
            m = self._view(self.multiplier, acc)
            one = torch.ones_like(s)
            y = torch.div(acc.long() * m + torch.bitwise_left_shift(one, s - 1), torch.bitwise_left_shift(one, s),
                          rounding_mode="floor").double()
        return torch.clamp(y + self.zero_point, lo, hi)

"""Quantizer parts (Brevitas-style small pieces): rounding, ranges, scales (float or power of two), dyadic multipliers.

Rounding is the one convention of docs/numerics.md, round half up: ``floor(x / scale + 0.5)``, never ``torch.round`` (half to even),
so fake-quant and hwsim's ``(x + 2^(s-1)) >> s`` agree bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


class QuantError(ValueError):
    """Impossible quantization settings or unusable calibration data."""


def check_bits(bits: int, what: str = "bits", lo: int = 2, hi: int = 16) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not lo <= int(bits) <= hi:
        raise QuantError(f"{what} must be an integer in {lo}..{hi}, got {bits!r}")
    return int(bits)


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of a ``bits``-wide code."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


def quantize(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool, zero_point: int | torch.Tensor = 0) -> torch.Tensor:
    """Integer codes (as a float tensor) of ``x``: clamp(floor(x / scale + 0.5) + zp)."""
    lo, hi = qrange(bits, signed)
    return torch.clamp(round_half_up(x / scale) + zero_point, lo, hi)


def fake_quant(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool, zero_point: int | torch.Tensor = 0) -> torch.Tensor:
    """Quantize then dequantize: (q - zp) * scale."""
    return (quantize(x, scale, bits, signed, zero_point) - zero_point) * scale


def absmax_scale(absmax: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Symmetric scale mapping ``absmax`` to the largest code (a tiny floor keeps all-zero channels finite)."""
    qmax = qrange(bits, signed)[1]
    return torch.clamp(absmax.double(), min=1e-12) / qmax


def pot_floor_exp(scale: torch.Tensor) -> torch.Tensor:
    """floor(log2 scale) as integers: the base of P^2-ViT's adaptive rounding window."""
    return torch.floor(torch.log2(scale.double())).long()


def pot_ceil_exp(absmax: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Smallest exponent e with absmax <= qmax * 2^e (no clipping)."""
    return torch.ceil(torch.log2(absmax_scale(absmax, bits, signed))).long()


def is_pot(scale: torch.Tensor) -> bool:
    """True when every entry is an exact power of two."""
    s = scale.double()
    return bool(torch.all(torch.exp2(torch.round(torch.log2(s))) == s))


def pot_exps(scale: torch.Tensor) -> torch.Tensor:
    """Exponents of an exactly power-of-two scale tensor (raises otherwise)."""
    if not is_pot(scale):
        raise QuantError("scale is not a power of two")
    return torch.round(torch.log2(scale.double())).long()


@dataclass(frozen=True)
class Dyadic:
    """M ~ m / 2^shift with 2^30 <= m < 2^31 (I-ViT's dyadic requantization)."""

    multiplier: int
    shift: int


def dyadic(ratio: float) -> Dyadic:
    """Nearest dyadic number to ``ratio`` with a 31-bit multiplier (frexp, round half up)."""
    if not math.isfinite(ratio) or ratio <= 0:
        raise QuantError(f"requantization ratio must be a positive finite number, got {ratio}")
    mant, exp = math.frexp(ratio)  # ratio = mant * 2^exp, mant in [0.5, 1)
    m = math.floor(mant * (1 << 31) + 0.5)
    shift = 31 - exp
    if m == 1 << 31:
        m, shift = 1 << 30, shift - 1
    if shift < 1:
        raise QuantError(f"requantization ratio {ratio} is too large for a dyadic multiplier")
    if shift > 62:
        return Dyadic(0, 62)  # ratio below 2^-31: every realistic input rounds to zero
    return Dyadic(int(m), int(shift))

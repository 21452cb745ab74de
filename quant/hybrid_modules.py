"""Fake-quant modules for the ops of hybrid models: SiLU, Hardswish, average pooling and a multiply by a constant.

Like quant.fakequant's nonlinear modules, each computes the float op (what papers report) or, with ``integer`` set,
hwsim's integer kernel on the codes of its input site (hwsim.kernels.activations, hwsim.kernels.pool), exact in the
forward and with the float op's gradient. ReLU needs no module: on codes or accumulators without zero point it is
exact in float too.
- ``QuantSiLU``: input on a 16-bit power-of-two grid (f fractional bits); output x * sigmoid(x) at 2^-(f + 8).
- ``QuantHardswish``: same input grid; output x * relu6(x + 3) at 2^-2f / 6.
- ``QuantAvgPool2d``: input codes on its site's grid; output 2^F * mean at the input scale / 2^F (F = 8).
- ``QuantMulConst``: x times a constant (EfficientFormer's LayerScale after its pooling mixer): the constant is
  quantized element by element to ``MUL_CONST_BITS``-bit codes on its own power-of-two scale (``const_codes``), so
  the product's scale varies along the constant's channel axis only, and x stays on its own grid.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hwsim.kernels.activations import hardswish_int, silu_int
from hwsim.kernels.pool import avgpool_int, reciprocals
from quant.fakequant import SIG_BITS, _codes, _Nonlinear
from quant.parts import qrange

POOL_FRAC_BITS = 8     # fractional bits the pooled mean keeps below its input's scale
MUL_CONST_BITS = 8     # signed codes of a constant multiplier
ACC32 = qrange(32, True)


def const_codes(c: torch.Tensor, bits: int = MUL_CONST_BITS) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales) of a float constant, element by element: scale 2^ceil(log2(|c| / (2^(b-1) - 1))) (1 for a
    zero), codes round half up. Shared by the fake-quant module and the lowering."""
    c = c.detach().double()
    top = 2 ** (bits - 1) - 1
    mag = c.abs()
    scale = torch.where(mag > 0, torch.exp2(torch.ceil(torch.log2(mag.clamp(min=1e-300) / top))), torch.ones_like(c))
    lo, hi = qrange(bits, True)
    return torch.clamp(torch.floor(c / scale + 0.5), lo, hi), scale


class QuantSiLU(_Nonlinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(x)
        if not self._use_int():
            return y
        frac = -int(self.in_site[0].exps())
        codes = _codes(x, self.in_site[0])
        out = np.empty(codes.shape, dtype=np.int64)
        silu_int(codes.reshape(-1), frac, SIG_BITS, ACC32[0], ACC32[1], out.reshape(-1))
        return self._straight_through(y, torch.from_numpy(out).double() * 2.0 ** -(frac + SIG_BITS))


class QuantHardswish(_Nonlinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardswish(x)
        if not self._use_int():
            return y
        frac = -int(self.in_site[0].exps())
        codes = _codes(x, self.in_site[0])
        out = np.empty(codes.shape, dtype=np.int64)
        hardswish_int(codes.reshape(-1), frac, ACC32[0], ACC32[1], out.reshape(-1))
        return self._straight_through(y, torch.from_numpy(out).double() * 2.0 ** (-2 * frac) / 6)


class QuantAvgPool2d(_Nonlinear):
    def __init__(self, name: str, pool: torch.nn.AvgPool2d) -> None:
        super().__init__(name)
        k, s, p = (v if isinstance(v, int) else v[0] for v in (pool.kernel_size, pool.stride, pool.padding))
        self.kernel, self.stride, self.padding = int(k), int(s), int(p)
        self.count_include_pad = bool(pool.count_include_pad)
        if pool.ceil_mode or pool.divisor_override is not None:
            raise ValueError(f"{name}: AvgPool2d with ceil_mode or divisor_override has no integer lowering")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(x, self.kernel, self.stride, self.padding, count_include_pad=self.count_include_pad)
        if not self._use_int():
            return y
        site = self.in_site[0]
        codes = _codes(x, site)
        out = np.empty(tuple(y.shape), dtype=np.int64)
        avgpool_int(codes, self.kernel, self.stride, self.padding, self.count_include_pad, 0,
                    reciprocals(self.kernel ** 2, POOL_FRAC_BITS), out)
        scale = float(site.current_scale().detach()) * 2.0 ** -POOL_FRAC_BITS
        return self._straight_through(y, torch.from_numpy(out).double() * scale)


class QuantMulConst(_Nonlinear):
    """``x * c`` with ``c`` a constant tensor (the second argument); quantizes ``c`` when its input site does."""

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if not self.in_site or self.in_site[0].mode != "quant":
            return x * c
        codes, scale = const_codes(c)
        return x * (codes * scale).to(x.dtype)

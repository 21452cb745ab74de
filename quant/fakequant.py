"""Differentiable fake-quant modules: the quantized model is the traced graph with these modules in it.

- ``ActQuant``: one activation quantization site (a graph edge or a node output), named by module path. A uniform grid
  (bits, sign, zero point, scale per tensor or per channel along one axis, power of two or float) or log2 codes
  (post-softmax) or twin-uniform codes (two grids 2^m apart; PTQ4ViT, MPTQ-ViT: ``twin_quant``). Modes:
  ``observe`` (record float statistics for calibration, pass the input through), ``quant``
  (fake-quantize), ``float`` (bypass). Straight-through estimator for the rounding; the scale can be learnt by LSQ
  (Esser et al., ICLR 2020), optionally constrained to powers of two (the exponent rounds with a straight-through
  estimator). While a reconstruction trains, ``drop`` leaves each element float with that probability (QDrop).
- ``AlignQuant``: an input of an Add, quantized on the grid of the Add's output site (what the integer Add's alignment
  shifts compute).
- ``QuantLinear`` / ``QuantConv2d``: float weights and biases (trainable) with a ``WeightQuant`` per output channel,
  optionally with AdaRound's learnable rounding (Nagel et al., ICML 2020); the bias is rounded on the accumulator
  grid exactly as the exported int32 bias is.
- ``QuantLayerNorm`` / ``QuantSoftmax`` / ``QuantGELU``: the nonlinear ops, computed either as float (what papers
  report) or by hwsim's integer kernels (what the hardware computes). The integer forward is exact; its backward is
  the float op's gradient (straight-through), so training sees the integer error.
Rounding is round half up everywhere (``floor(x / s + 1/2)``), the integer program's convention (docs/numerics.md).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hwsim.kernels.gelu import gelu_int
from hwsim.kernels.layernorm import NORM_BITS, layernorm_int
from hwsim.kernels.softmax import ETA_FRAC_BITS, LOG2, LOG_SQRT2, TWIN, UNIFORM, softmax_int
from hwsim.kernels.twin import twin_decode
from quant.fakequant_kernel import fused_forward
from quant.parts import QuantError, qrange
from quant.quantizer import log2_codes, log2_values

SIG_BITS = 8          # integer GELU's sigmoid bits (hwsim.kernels.gelu)
GAMMA_BITS = 16       # integer LayerNorm's per-channel multiplier width
INTERNAL_BITS = 16    # residual stream, logits, GELU input


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half up with a straight-through gradient."""
    return x + (torch.floor(x + 0.5) - x).detach()


class _FakeQuant(torch.autograd.Function):
    """(clamp(floor(x / s + 1/2) + z, lo, hi) - z) * s in one node, with the gradients autograd gives the same
    expression written with ``round_ste``: x passes where the rounded code is inside [lo, hi]; the scale gets LSQ's
    (q - z) - [inside] * x / s; a learnt zero point (a tensor, already rounded) gets LSQ+'s -s where the code clips.
    Fused because the fake-quant model, reconstruction and QAT spend their time here; the forward runs in one numba
    loop (quant.fakequant_kernel) where it applies."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int,
                zero: int | torch.Tensor) -> torch.Tensor:
        z = float(zero) if isinstance(zero, torch.Tensor) else zero
        fused = fused_forward(x, scale, lo, hi, z)
        if fused is not None:
            out, v, q, inside = fused
        else:
            v = x / scale
            codes = torch.floor(v + 0.5).add_(z)
            inside = (codes >= lo) & (codes <= hi)
            q = codes.clamp_(lo, hi).sub_(z)
            out = q * scale
        ctx.save_for_backward(v, q, inside, scale)
        ctx.zero_shape = zero.shape if isinstance(zero, torch.Tensor) else None
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        v, q, inside, scale = ctx.saved_tensors
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        grad_scale = grad_zero = None
        if ctx.needs_input_grad[1]:
            grad_scale = (grad * (q - v * inside)).sum_to_size(scale.shape)
        if ctx.zero_shape is not None and ctx.needs_input_grad[4]:
            grad_zero = -(grad * scale).masked_fill_(inside, 0).sum().reshape(ctx.zero_shape)
        return grad_x, grad_scale, None, None, grad_zero


def fake_quant_ste(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool, zero_point: int = 0) -> torch.Tensor:
    """Fake-quantize ``x`` on ``scale`` (broadcasting) with round half up and straight-through gradients."""
    lo, hi = qrange(bits, signed)
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        return _FakeQuant.apply(x, scale, lo, hi, int(zero_point))
    # inference (evaluation, calibration): the same arithmetic in place, without the masks backward needs
    return torch.floor_((x / scale).add_(0.5)).add_(int(zero_point)).clamp_(lo, hi).sub_(int(zero_point)).mul_(scale)


def twin_quant(x: torch.Tensor, scale: torch.Tensor, bits: int, m: int, signed: bool) -> torch.Tensor:
    """Twin-uniform fake-quant on the fine step ``scale`` and the coarse step scale 2^m (hwsim.kernels.twin), round
    half up with straight-through gradients. ``signed`` (post-GELU): negatives on the fine grid down to -2^(b-1)
    steps, the rest on the coarse grid up to 2^(b-1) - 1 steps. Unsigned (post-softmax): the fine grid while the
    value rounds below 2^(b-1) fine steps, else the coarse grid up to 2^(b-1) - 1 steps."""
    half = 2 ** (bits - 1)
    coarse_scale = scale * 2.0**m
    coarse = torch.clamp(round_ste(x / coarse_scale), 0, half - 1) * coarse_scale
    if signed:
        fine = torch.clamp(round_ste(x / scale), -half, 0) * scale
        return torch.where(x < 0, fine, coarse)
    fine_codes = round_ste(x / scale)
    return torch.where(fine_codes.detach() < half, fine_codes * scale, coarse)


def _view(values: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """A per-channel vector as a view broadcasting along ``axis`` (counted from the end) of ``x``."""
    if axis is None or values.numel() == 1:
        return values.reshape(())
    shape = [1] * x.dim()
    shape[axis] = -1
    return values.reshape(shape)


class ActQuant(torch.nn.Module):
    """One activation quantization site. ``role`` tells the method what kind of tensor it is:
    ``tensor`` (a GEMM operand, per tensor), ``ptf`` (LayerNorm output read by a Linear: per-channel power-of-two
    factors allowed), ``skewed`` (one-sided range: a zero point allowed), ``head`` (MatMul operand, per head along
    axis -3), ``softmax`` (post-softmax probabilities: log2 codes, uniform 2^-bits, or per head), ``probs`` (the softmax's
    16-bit uniform output that a per-head ``softmax`` site requantizes), ``internal`` (16-bit
    power-of-two: residual stream, logits, GELU input)."""

    def __init__(self, name: str, role: str, bits: int, max_exp: int | None = None) -> None:
        super().__init__()
        self.name, self.role, self.bits, self.max_exp = name, role, bits, max_exp
        self.mode = "float"
        self.signed = role != "softmax"
        self.zero_point = 0
        self.axis: int | None = None
        self.log2 = False
        self.sqrt2 = False                        # log codes in half-octave steps (log-sqrt(2), RepQ-ViT)
        self.eta = 0                              # SULQ (I&S-ViT): log2 codes of p + eta, eta = self.eta / 2^12
        self.twin_m = 0                           # twin-uniform codes, coarse step = scale * 2^twin_m (0: plain)
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))
        self.observer = None                      # set while calibrating
        self.lsq: torch.nn.Parameter | None = None  # log2 of the scale when learnt
        self.lsq_pot = False
        self.lsq_zero: torch.nn.Parameter | None = None  # the zero point when learnt (LSQ+), rounded in the forward
        self.register_buffer("lsq_factors", None)  # per-channel 2^k kept while one shared step is learnt (PTF)
        self.drop = 0.0                           # QDrop: while training, leave elements float with this probability
        self.per_head = role == "head"            # one scale per head (axis -3); observed as per-head rows
        self.producer: list = []                  # a ``probs`` site's softmax: its integer port writes this grid

    # --- format ------------------------------------------------------------------------------------------------
    def set_format(self, scale: torch.Tensor, axis: int | None = None, zero_point: int = 0, signed: bool | None = None,
                   log2: bool = False, bits: int | None = None, sqrt2: bool = False) -> None:
        self.scale = scale.detach().double().reshape(-1 if scale.numel() > 1 else ()).clone()
        self.axis = axis if self.scale.numel() > 1 else None
        self.zero_point, self.log2, self.sqrt2 = int(zero_point), log2, log2 and sqrt2
        if signed is not None:
            self.signed = signed
        if bits is not None:
            self.bits = bits

    def learn_scale(self, pot: bool = False, zero_point: bool = False, shared: bool = False) -> None:
        """LSQ: make the scale a trainable parameter (its log2), optionally rounded to a power of two; with
        ``zero_point`` the zero point too (LSQ+, Bhalgat et al., CVPR-W 2020), an integer in the forward (STE).
        ``shared`` on a per-channel scale: learn one layer-wise step and keep each channel's ratio to it (PTF's
        power-of-two factors, which the consumer applies as shifts)."""
        log2 = torch.log2(self.scale.clone())
        if shared and self.scale.numel() > 1:
            top = log2.max()
            self.lsq_factors = torch.exp2(torch.round(log2 - top))  # the PTF scales are 2^k apart (up to rounding)
            log2 = top.reshape(())
        self.lsq = torch.nn.Parameter(log2)
        self.lsq_pot = pot
        if zero_point:
            self.lsq_zero = torch.nn.Parameter(torch.tensor(float(self.zero_point), dtype=torch.float64))

    def current_scale(self) -> torch.Tensor:
        if self.lsq is None:
            return self.scale
        e = round_ste(self.lsq) if self.lsq_pot else self.lsq
        # times the factors, not exp2 of a sum, so channels stay exactly powers of two apart for lowering
        return torch.exp2(e) if self.lsq_factors is None else torch.exp2(e) * self.lsq_factors

    def current_zero(self) -> torch.Tensor | int:
        """The zero point: an int, or while it is learnt the rounded parameter (straight-through), inside the range."""
        if self.lsq_zero is None:
            return self.zero_point
        lo, hi = qrange(self.bits, self.signed)
        return round_ste(self.lsq_zero.clamp(lo, hi))

    def freeze(self) -> None:
        """Write a learnt scale and zero point back into the fixed format (what lowering reads)."""
        if self.lsq_zero is not None:
            self.zero_point = int(self.current_zero().detach())
            self.lsq_zero = None
        if self.lsq is not None:
            with torch.no_grad():
                self.scale = self.current_scale().detach().clone()
            self.lsq = None
            self.lsq_factors = None

    @property
    def pot(self) -> bool:
        s = self.scale
        return bool(torch.all(torch.exp2(torch.round(torch.log2(s))) == s))

    def exps(self) -> torch.Tensor:
        return torch.round(torch.log2(self.scale)).long()

    # --- run ---------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe":
            if self.observer is not None:
                self.observer(self, x)
            return x
        if self.mode == "float":
            return x
        if self.producer and self.producer[0]._use_int():
            return x  # already on this grid: quantizing again would be the identity, at the cost of a big tensor
        if self.log2:
            eta = self.eta / 2.0 ** ETA_FRAC_BITS
            codes = log2_codes((x.detach().clamp(min=0) + eta).clamp(max=1), self.bits, self.sqrt2)
            return x + (log2_values(codes, self.bits, self.sqrt2).to(x.dtype) - eta - x).detach()
        if self.twin_m:
            return twin_quant(x, _view(self.current_scale(), x, self.axis).to(x.dtype), self.bits, self.twin_m,
                              self.signed)
        q = self.fake_quant(x)
        if self.drop > 0 and torch.is_grad_enabled():
            return torch.where(torch.rand_like(x) < self.drop, x, q)
        return q

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on this site's uniform grid, differentiable in x, the scale and a learnt zero point."""
        scale = _view(self.current_scale(), x, self.axis).to(x.dtype)
        if self.lsq_zero is None:
            return fake_quant_ste(x, scale, self.bits, self.signed, self.zero_point)
        lo, hi = qrange(self.bits, self.signed)
        return _FakeQuant.apply(x, scale, lo, hi, self.current_zero())

    def extra_repr(self) -> str:
        return f"{self.name}, role={self.role}, bits={self.bits}, mode={self.mode}"


class AlignQuant(torch.nn.Module):
    """An Add input on the grid of the Add's output site (``leader``); it never observes."""

    def __init__(self, name: str, leader: ActQuant) -> None:
        super().__init__()
        self.name = name
        self.leader = [leader]  # a list keeps the leader out of this module's children

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = self.leader[0]
        if lead.mode != "quant":
            return x
        return fake_quant_ste(x, _view(lead.current_scale(), x, lead.axis).to(x.dtype), lead.bits, lead.signed,
                              lead.zero_point)


class WeightQuant(torch.nn.Module):
    """Per-output-channel weight quantizer; ``learn_rounding`` turns on AdaRound's rectified-sigmoid rounding."""

    ZETA, GAMMA = 1.1, -0.1

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.enabled = False
        self.register_buffer("scale", torch.ones(1, dtype=torch.float64))
        self.alpha: torch.nn.Parameter | None = None
        self.hard = True
        self.lsq: torch.nn.Parameter | None = None  # log2 of the per-channel scale when learnt (LSQ)
        self.lsq_pot = False

    def set_scale(self, scale: torch.Tensor) -> None:
        self.scale = scale.detach().double().reshape(-1).clone()

    def learn_scale(self, pot: bool = False) -> None:
        """LSQ (Esser et al., ICLR 2020): the per-channel scale trainable through its log2, optionally rounded to a
        power of two (straight-through)."""
        self.lsq = torch.nn.Parameter(torch.log2(self.scale.clone()))
        self.lsq_pot = pot

    def current_scale(self) -> torch.Tensor:
        if self.lsq is None:
            return self.scale
        return torch.exp2(round_ste(self.lsq) if self.lsq_pot else self.lsq)

    def freeze(self) -> None:
        """Write a learnt scale back into ``scale`` (what lowering reads)."""
        if self.lsq is not None:
            with torch.no_grad():
                self.scale = self.current_scale().detach().clone()
            self.lsq = None

    def _s(self, w: torch.Tensor) -> torch.Tensor:
        return self.current_scale().reshape((-1,) + (1,) * (w.dim() - 1)).to(w.dtype)

    def learn_rounding(self, w: torch.Tensor) -> None:
        """AdaRound: codes floor(w/s) + h(alpha), h initialised so the start is w/s's own fractional part; a weight
        that has learnt its rounding already continues from it (progressive reconstruction)."""
        if self.alpha is not None:
            self.hard = False
            return
        rest = (w.detach().double() / self._s(w.double())) - torch.floor(w.detach().double() / self._s(w.double()))
        rest = rest.clamp(0.01, 0.99)
        self.alpha = torch.nn.Parameter(-torch.log((self.ZETA - self.GAMMA) / (rest - self.GAMMA) - 1))
        self.hard = False

    def rectified(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.alpha) * (self.ZETA - self.GAMMA) + self.GAMMA, 0, 1)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        lo, hi = qrange(self.bits, True)
        s = self._s(w)
        if self.alpha is None:
            return torch.clamp(round_ste(w / s), lo, hi)
        up = (self.alpha >= 0).to(w.dtype) if self.hard else self.rectified().to(w.dtype)
        return torch.clamp(torch.floor(w / s).detach() + up, lo, hi)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        return self.codes(w) * self._s(w)


class _QuantGemm(torch.nn.Module):
    """Shared by QuantLinear and QuantConv2d: the input site (for the accumulator grid) and bias rounding."""

    def __init__(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None, bits: int) -> None:
        super().__init__()
        self.name = name
        self.weight = torch.nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone())
        self.wq = WeightQuant(bits)
        self.input_site: list[ActQuant] = []

    def input_base_scale(self) -> torch.Tensor:
        """The accumulator's input scale: the input site's scale, its smallest per-channel value under PTF; for a
        grouped convolution with one input scale per channel, per output channel (each reads one group)."""
        site = self.input_site[0]
        scale = site.current_scale()
        groups = getattr(self, "groups", 1)
        if scale.numel() > 1 and groups > 1 and scale.numel() == groups:
            return scale.repeat_interleave(self.weight.shape[0] // groups)
        return scale.min()

    def quant_bias(self, dtype: torch.dtype, bias: torch.Tensor | None = None) -> torch.Tensor | None:
        """The bias (or ``bias`` in its place) rounded on the accumulator grid, as the exported int32 bias."""
        bias = self.bias if bias is None else bias
        if bias is None:
            return None
        if not self.wq.enabled or not self.input_site or self.input_site[0].mode != "quant":
            return bias.to(dtype)
        acc = (self.input_base_scale() * self.wq.current_scale()).to(dtype)
        lo, hi = qrange(32, True)
        return torch.clamp(round_ste(bias.to(dtype) / acc), lo, hi) * acc


class QuantLinear(_QuantGemm):
    """``rectifier``: a per-output-feature affine on the output while it trains (Q-ViT's information rectification,
    quant.methods.qvit), computed as its folded form (so training sees the bias rounding the program will have) and
    folded into the weights and bias before lowering."""

    def __init__(self, name: str, linear: torch.nn.Linear, bits: int) -> None:
        super().__init__(name, linear.weight, linear.bias, bits)
        self.rectifier: torch.nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.wq(self.weight.to(x.dtype))
        if self.rectifier is not None:
            return self.rectifier.rectify(self, x, w)
        return F.linear(x, w, self.quant_bias(x.dtype))


class QuantConv2d(_QuantGemm):
    def __init__(self, name: str, conv: torch.nn.Conv2d, bits: int) -> None:
        super().__init__(name, conv.weight, conv.bias, bits)
        if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or len(set(conv.stride)) != 1 \
                or not isinstance(conv.padding, tuple) or len(set(conv.padding)) != 1 \
                or len(set(conv.kernel_size)) != 1:
            raise QuantError(f"{name}: only square Conv2d with equal stride and padding on both axes and no dilation "
                             f"lowers to the integer program (got kernel {conv.kernel_size}, stride {conv.stride}, "
                             f"padding {conv.padding}, dilation {conv.dilation})")
        self.stride, self.padding, self.groups = conv.stride[0], conv.padding[0], conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.wq(self.weight.to(x.dtype)), self.quant_bias(x.dtype), self.stride, self.padding, 1,
                        self.groups)


def _codes(x: torch.Tensor, site: ActQuant) -> np.ndarray:
    """Integer codes of a tensor already on ``site``'s power-of-two grid."""
    return np.ascontiguousarray(torch.floor(x.detach().double() / site.current_scale().detach() + 0.5).numpy(),
                                dtype=np.int64)


def layernorm_int_params(weight: torch.Tensor, bias: torch.Tensor, out_scale: torch.Tensor,
                         norm_bits: int = NORM_BITS, zero_point: int = 0) -> dict[str, np.ndarray]:
    """Integer LayerNorm constants for output scale ``out_scale`` (per tensor or per channel): the multiplier
    R = gamma * sqrt(C) / (2^norm_bits * s_out) as G / 2^shift with G on 15 bits of magnitude, and beta on the same
    shift, plus the output zero point (z 2^shift, so the rounded code comes out with z added: exact). Shared by the
    fake-quant module and the lowering, so both compute the same integers."""
    c = weight.numel()
    gamma, beta = weight.detach().double(), bias.detach().double()
    s = out_scale.detach().double().expand(c) if out_scale.numel() == 1 else out_scale.detach().double()
    ratio = gamma * np.sqrt(c) / (2.0 ** norm_bits * s)
    top = GAMMA_BITS - 2
    safe = torch.where(ratio == 0, torch.ones_like(ratio), ratio.abs())
    shift = (top - torch.floor(torch.log2(safe))).long().clamp(1, 62)
    g = torch.floor(ratio * torch.exp2(shift.double()) + 0.5)
    over = g.abs() >= 2 ** (GAMMA_BITS - 1)
    shift = torch.where(over, shift - 1, shift)
    g = torch.floor(ratio * torch.exp2(shift.double()) + 0.5)
    b = torch.floor(beta * torch.exp2(shift.double()) / s + 0.5) + zero_point * torch.exp2(shift.double())
    return {"gamma": g.long().numpy(), "beta": b.long().numpy(), "shift": shift.numpy()}


class _Nonlinear(torch.nn.Module):
    """``integer`` selects hwsim's integer kernel in the forward (exact) with the float op's gradient."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.integer = False
        self.in_site: list[ActQuant] = []
        self.out_site: list[ActQuant] = []

    def _use_int(self) -> bool:
        return self.integer and bool(self.in_site) and all(s.mode == "quant" for s in self.in_site + self.out_site)

    @staticmethod
    def _straight_through(y_float: torch.Tensor, y_int: np.ndarray | torch.Tensor) -> torch.Tensor:
        y_int = torch.as_tensor(y_int, dtype=y_float.dtype)
        return y_float + (y_int - y_float).detach()


class QuantLayerNorm(_Nonlinear):
    def __init__(self, name: str, ln: torch.nn.LayerNorm) -> None:
        super().__init__(name)
        self.weight = torch.nn.Parameter(ln.weight.detach().clone())
        self.bias = torch.nn.Parameter(ln.bias.detach().clone())
        self.eps = ln.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)
        if not self._use_int():
            return y
        site = self.out_site[0]
        # The input is on a power-of-two grid; integer LayerNorm is invariant to that scale, so its codes suffice.
        codes = _codes(x, self.in_site[0])
        zero = int(site.current_zero())
        p = layernorm_int_params(self.weight, self.bias, site.current_scale(), zero_point=zero)
        rows = codes.reshape(-1, codes.shape[-1])
        out = np.empty(rows.shape, dtype=np.int64)
        lo, hi = qrange(site.bits, site.signed)
        layernorm_int(rows, p["gamma"], p["beta"], p["shift"], lo, hi, out)
        scale = _view(site.current_scale().detach(), x, site.axis)
        values = (torch.from_numpy(out.reshape(codes.shape)).double() - zero) * scale
        if site.lsq is None:
            return self._straight_through(y, values)
        # The output is already on the site's grid, so the site passes it unchanged and would give a learnt scale
        # (LSQ) no rounding-error gradient: take the gradients of quantizing the float output here instead.
        return self._straight_through(site.fake_quant(y), values)


class QuantSoftmax(_Nonlinear):
    def __init__(self, name: str, dim: int = -1) -> None:
        super().__init__(name)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.softmax(x, self.dim)
        if not self._use_int():
            return y
        site_in, site_out = self.in_site[0], self.out_site[0]
        codes = _codes(x, site_in)
        rows = codes.reshape(-1, codes.shape[-1])
        out = np.empty(rows.shape, dtype=np.int64)
        mode = (LOG_SQRT2 if site_out.sqrt2 else LOG2) if site_out.log2 else (TWIN if site_out.twin_m else UNIFORM)
        softmax_int(rows, -int(site_in.exps()), site_out.bits, mode, out, site_out.eta, site_out.twin_m)
        if site_out.twin_m:  # the integers the MatMul multiplies (hwsim's decode), at the fine step
            twin_decode(out, site_out.bits, site_out.twin_m, False, out)
        out = torch.from_numpy(out.reshape(codes.shape))
        if site_out.log2:
            values = log2_values(out, site_out.bits, site_out.sqrt2) - site_out.eta / 2.0 ** ETA_FRAC_BITS
        else:
            values = out.double() * site_out.current_scale().detach()
        return self._straight_through(y, values)


class QuantGELU(_Nonlinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(x)
        if not self._use_int():
            return y
        site_in = self.in_site[0]
        frac = -int(site_in.exps())
        codes = _codes(x, site_in)
        out = np.empty(codes.shape, dtype=np.int64)
        gelu_int(codes.reshape(-1), frac, SIG_BITS, out.reshape(-1))
        return self._straight_through(y, torch.from_numpy(out).double() * 2.0 ** -(frac + SIG_BITS))

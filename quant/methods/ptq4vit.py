"""PTQ4ViT: post-training quantization for vision transformers with twin uniform quantization (Yuan, Xu, Wang, Ma,
Sun and Wu, ECCV 2022).

- Twin uniform quantization for the two skewed activations: post-softmax probabilities and post-GELU values. A b-bit
  code carries a region and b-1 bits of magnitude (hwsim.kernels.twin): post-softmax, R2 = [0, 1) on the step 2^-(b-1)
  (fixed, as in the paper) and R1 on the step 2^-(b-1+m) for the small probabilities (the code's top bit selects the
  region); post-GELU, R1 for the negative values on the step Delta_1 (chosen so that R1 covers the negative range,
  as in the paper) and R2 for the rest on Delta_2 = 2^m Delta_1. The paper constrains the ratio of the two steps to a
  power of two so that the hardware aligns the regions with a shift: the integer program executes exactly that (the
  softmax unit's twin mode; the PE shifts a product by m or 0).
- Hessian-guided scale search: per layer, candidate steps Delta_i = (alpha + i (beta - alpha) / n) Delta_0 with alpha
  = 0.01, beta = 1.2, n = 100 around the absmax step Delta_0, for the weights (per output channel) and the input (per
  tensor) alternately, 3 rounds (weights first, with the float input), each candidate scored by the layer-output error
  weighted with the squared gradients of the task loss at the output (the paper's Fisher diagonal, loss =
  cross-entropy against the float model's prediction; quant.layer_records). Post-GELU, the candidates are Delta_2's
  and each takes the largest m for which R1 still covers the negative range.
- Our reading fills two gaps. MatMul operands take one step per head (the integer program's form) and their search
  scores the plain output error of the product (the records hold no gradient at a MatMul's output); the twin
  softmax's m (1 .. 16 - b) is searched the same way, by the error of attn @ V. The first and last GEMM stay at 8 bits
  as in every vitsim method, and the patch embedding keeps its output-MSE weight scales.
- Scales are floats, requantization dyadic multiply-shift. Calibration: the paper's 32 images. Nothing was tuned.
"""
from __future__ import annotations

import torch

from hwsim.kernels.twin import TWIN_MAX_M
from quant.fakequant import twin_quant
from quant.layer_records import LinearRecord, MatMulRecord, record_gemms
from quant.methods.base import Method
from quant.observers import Observer
from quant.parts import absmax_scale, fake_quant
from quant.quantizer import Quantizer

CALIBRATION_IMAGES = 32
ALPHA, BETA, STEPS, ROUNDS = 0.01, 1.2, 100, 3


def candidates(base: torch.Tensor) -> torch.Tensor:
    """[STEPS + 1, *base.shape]: (alpha + i (beta - alpha) / n) * base, i = 0..n."""
    ratios = ALPHA + torch.arange(STEPS + 1, dtype=torch.float64) * (BETA - ALPHA) / STEPS
    return ratios.reshape((-1,) + (1,) * base.dim()) * base.double()


def max_twin_m(bits: int) -> int:
    """The widest ratio whose decoded operand (b + m signed bits) fits the GEMM's int16 operands."""
    return min(TWIN_MAX_M, 16 - bits)


def gelu_twin_m(coarse: torch.Tensor, negative: float, bits: int) -> int:
    """The largest m >= 1 whose fine step coarse / 2^m still lets R1's 2^(b-1) steps cover ``negative`` (|min|)."""
    half = 2 ** (bits - 1)
    m = 1
    while m < max_twin_m(bits) and float(coarse) * half / 2.0 ** (m + 1) >= negative:
        m += 1
    return m


def _weighted_error(out_hat: torch.Tensor, out: torch.Tensor, grad2: torch.Tensor | None) -> torch.Tensor:
    """Per output channel: sum over rows of grad^2 (O^ - O)^2 (plain squared error without gradients)."""
    d2 = (out_hat - out) ** 2
    return (d2 if grad2 is None else grad2 * d2).sum(0)


class PTQ4ViT(Method):
    name = "ptq4vit"
    softmax_log2_bits = None
    calibration_images = CALIBRATION_IMAGES

    # --- starting scales (the search replaces those of every Linear and MatMul) -------------------------------------
    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        return Quantizer(f"Int{bits}WeightPerChannelFloat", observer="mse").fit(weight, inputs=inputs).scale

    def tensor_scale(self, obs: Observer, bits: int, signed: bool = True,
                     consumer: torch.Tensor | None = None) -> torch.Tensor:
        return Quantizer(f"{'' if signed else 'U'}Int{bits}ActPerTensorFloat").fit(obs).scale

    def zero_point_scale(self, obs: Observer, bits: int,
                         consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        return self.tensor_scale(obs, bits), 0

    def per_head_scales(self, absmax: torch.Tensor, rows: torch.Tensor, bits: int,
                        partner: torch.Tensor | None = None) -> torch.Tensor:
        return absmax_scale(absmax, bits, True)

    # --- the search ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def refine(self, qg, calib: torch.Tensor, progress: bool = False) -> None:
        linears, matmuls = record_gemms(qg, calib[:CALIBRATION_IMAGES], grads=True)
        for name, g in qg.gemms.items():
            if g.kind == "linear":
                self._search_linear(g, linears[name])
            elif g.kind == "matmul":
                self._search_matmul(g, matmuls[name])
        qg.set_mode("quant")

    def _search_linear(self, g, rec: LinearRecord) -> None:
        site, wq = g.inputs[0], g.module.wq
        w = g.module.weight.detach().double()
        bias = 0 if g.module.bias is None else g.module.bias.detach().double()
        twin = site.role == "skewed"  # post-GELU
        wbase = absmax_scale(w.abs().amax(1), wq.bits, True)
        w_hat, x_hat = w, rec.x
        lo, hi = float(rec.x.min()), float(rec.x.max())
        if twin:
            half = 2 ** (site.bits - 1)
            coarse = candidates(torch.tensor(max(hi, 1e-8) / (half - 1)))
            a_options = [(s / 2.0**m, m) for s in coarse for m in [gelu_twin_m(s, max(-lo, 1e-8), site.bits)]]
        else:
            a_options = [(s, 0) for s in candidates(absmax_scale(torch.tensor(max(-lo, hi)), site.bits, site.signed))]
        for _ in range(ROUNDS):
            errors = []
            scales = candidates(wbase)
            for s in scales:
                errors.append(_weighted_error(x_hat @ fake_quant(w, s[:, None], wq.bits, True).t() + bias, rec.out,
                                              rec.grad2))
            pick = torch.stack(errors).argmin(0)
            w_scale = scales.gather(0, pick[None])[0]
            w_hat = fake_quant(w, w_scale[:, None], wq.bits, True)
            errors = []
            for s, m in a_options:
                xq = twin_quant(rec.x, s, site.bits, m, True) if m else fake_quant(rec.x, s, site.bits, site.signed)
                errors.append(float(_weighted_error(xq @ w_hat.t() + bias, rec.out, rec.grad2).sum()))
            a_scale, a_m = a_options[int(torch.tensor(errors).argmin())]
            x_hat = twin_quant(rec.x, a_scale, site.bits, a_m, True) if a_m \
                else fake_quant(rec.x, a_scale, site.bits, site.signed)
        wq.set_scale(w_scale)
        site.set_format(a_scale.reshape(()), zero_point=0, signed=True if twin else site.signed)
        site.twin_m = a_m

    def _search_matmul(self, g, rec: MatMulRecord) -> None:
        sa, sb = g.inputs
        heads = rec.a.shape[1]
        per_head = lambda t: t.transpose(0, 1).reshape(heads, -1).abs().amax(1)  # noqa: E731
        view = lambda s: s.reshape(1, heads, 1, 1)  # noqa: E731
        b_options = candidates(absmax_scale(per_head(rec.b), sb.bits, True))
        if sa.role == "softmax":
            top = max_twin_m(sa.bits)
            a_options = [(torch.tensor(2.0 ** -(sa.bits - 1 + m)), m) for m in range(1, top + 1)]
            quant_a = lambda s, m: twin_quant(rec.a, s, sa.bits, m, False)  # noqa: E731
        else:
            a_options = [(s, 0) for s in candidates(absmax_scale(per_head(rec.a), sa.bits, True))]
            quant_a = lambda s, m: fake_quant(rec.a, view(s), sa.bits, True)  # noqa: E731
        a_hat, b_hat = rec.a, rec.b
        head_error = lambda out: ((out - rec.out) ** 2).transpose(0, 1).reshape(heads, -1).sum(1)  # noqa: E731
        for _ in range(ROUNDS):
            errors = torch.stack([head_error(a_hat @ fake_quant(rec.b, view(s), sb.bits, True)) for s in b_options])
            b_scale = b_options.gather(0, errors.argmin(0)[None])[0]
            b_hat = fake_quant(rec.b, view(b_scale), sb.bits, True)
            errors = torch.stack([head_error(quant_a(s, m) @ b_hat) for s, m in a_options])
            if sa.role == "softmax":  # one ratio for the whole softmax (one op attribute)
                a_scale, a_m = a_options[int(errors.sum(1).argmin())]
            else:
                options = torch.stack([s for s, _ in a_options])
                a_scale, a_m = options.gather(0, errors.argmin(0)[None])[0], 0
            a_hat = quant_a(a_scale, a_m)
        sb.set_format(b_scale, axis=-3)
        if sa.role == "softmax":
            sa.set_format(a_scale.double(), signed=False)
        else:
            sa.set_format(a_scale, axis=-3)
        sa.twin_m = a_m

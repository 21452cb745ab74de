"""P^2-ViT: power-of-two post-training quantization of ViTs (Shi et al., "P^2-ViT: Power-of-Two Post-Training
Quantization and Acceleration for Fully Quantized Vision Transformer", IEEE TVLSI 2024; built on FQ-ViT).

- Adaptive power-of-two rounding: every scale is 2^alpha with alpha in {floor(log2 s) - 1, ..., floor(log2 s) + 2}
  around the min-max scale s (quant.quantizer's "mse" search over POT_WINDOW). Weights (per output channel) choose
  alpha by the layer's output MSE ||X W^T - X Q(W)^T||^2 on calibration inputs. "Output MSE" for activations (where
  the paper gives no detail, our reading): an activation read by a Linear by that Linear's output error
  ||(X - Q(X)) W^T||^2; q and k per head by the error of the logits ||(q - Q(q)) k^T||^2 (k likewise against q),
  computed through the k Gram matrix; v and the input image by their own quantization MSE.
- PoT-aware smoothing before calibration: s_j = 2^round(log2(max|X_j|^a / max|W_j|^(1-a))) for the LayerNorm output
  channels j feeding a Linear: a = 0.35 where the Linear feeds attention (qkv), 0.35 otherwise (fc1, patch merging).
  X_j / s_j is folded into the LayerNorm affine and W_j * s_j into the linear weight, so the float model is unchanged
  and only quantization sees the smoother channels. Tuned: both strengths, by bench/tune_p2vit.py on 2 000 held-out
  training images of deit_fmnist (mean fake-quant top-1 at W4A4 and W3A3), its default grid and then
  ``--attention 0.3,0.35,0.4 --other 0.2,0.275``: a flat optimum around 0.35-0.4 x 0.2-0.35.
- Post-LayerNorm activations use FQ-ViT's power-of-two factors (PTF): a layer-wise scale 2^e and per-channel factors
  2^k, k in 0..3, chosen per channel by MSE; the next linear shifts its input by k.
- The GELU output, whose range is one-sided, takes a zero point (signed codes, so the PE array stays signed); the
  exporter folds it into fc2's bias and the requantizer adds it.
- Softmax output: 4-bit log2 codes (FQ-ViT's log-int-softmax), so attn @ V is shifts.
Every requantization is therefore a shift (quant.scales.Requant picks "shift" when both scales are powers of two).
"""
from __future__ import annotations

import torch

from quant.graph.capture import Captured
from quant.graph.norm_linear import channel_ranges, fold_channel_affine, norm_linear_pairs
from quant.methods.base import Method
from quant.observers import Observer
from quant.parts import absmax_scale, fake_quant
from quant.quantizer import Quantizer, head_scales, pot_candidates, quant_error

SMOOTH_ALPHA_ATTENTION = 0.35
SMOOTH_ALPHA_OTHER = 0.35
PTF_LEVELS = 4  # k in 0..3


class P2ViT(Method):
    """The defaults are the method as vitsim runs it; the switches turn our readings of the paper off, for ablations
    (bench/p2vit_ablation.py): ``output_mse=False`` rounds activations by their own MSE, ``gelu_zero_point=False``
    codes the GELU output symmetrically, ``logit_mse=False`` rounds q and k by their own MSE."""

    name = "p2vit"
    softmax_log2_bits = 4

    def __init__(self, output_mse: bool = True, gelu_zero_point: bool = True, logit_mse: bool = True,
                 smooth_alpha_attention: float = SMOOTH_ALPHA_ATTENTION, smooth_alpha_other: float = SMOOTH_ALPHA_OTHER) -> None:
        self.output_mse, self.gelu_zero_point, self.logit_mse = output_mse, gelu_zero_point, logit_mse
        self.smooth_alpha_attention, self.smooth_alpha_other = smooth_alpha_attention, smooth_alpha_other

    @torch.no_grad()
    def prepare(self, captured: Captured, calib: torch.Tensor) -> None:
        pairs = norm_linear_pairs(captured)
        ranges = channel_ranges(captured, [p.norm for p in pairs], calib)
        for pair in pairs:
            linear = captured.gm.get_submodule(pair.linear)
            a = self.smooth_alpha_attention if pair.attention else self.smooth_alpha_other
            w_max = linear.weight.double().abs().amax(0)
            ratio = ranges[pair.norm].absmax.clamp(min=1e-8) ** a / w_max.clamp(min=1e-8) ** (1 - a)
            fold_channel_affine(captured, pair, torch.exp2(torch.round(torch.log2(ratio))))

    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        return Quantizer(f"Int{bits}WeightPerChannelPoT", "mse").fit(weight, inputs=inputs).scale

    def tensor_scale(self, obs: Observer, bits: int, signed: bool = True,
                     consumer: torch.Tensor | None = None) -> torch.Tensor:
        consumer = consumer if self.output_mse else None
        spec = f"{'' if signed else 'U'}Int{bits}ActPerTensorPoT"
        return Quantizer(spec, "mse").fit(obs, consumer=consumer).scale

    def zero_point_scale(self, obs: Observer, bits: int,
                         consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """GELU output (min about -0.17, max several units): a zero point moves the signed code range onto [min, max],
        as FQ-ViT's asymmetric activations do; the (scale, zero point) pair is chosen by the consumer's output MSE."""
        if not self.gelu_zero_point:
            return self.tensor_scale(obs, bits, consumer=consumer), 0
        consumer = consumer if self.output_mse else None
        q = Quantizer(f"ShiftedInt{bits}ActPerTensorPoT", "mse").fit(obs, consumer=consumer)
        return q.scale, int(q.zero_point)

    def per_head_scales(self, absmax: torch.Tensor, rows: torch.Tensor, bits: int,
                        partner: torch.Tensor | None = None) -> torch.Tensor:
        """Per head; for q and k by the MSE of the logits Q(q).k^T (resp. q.Q(k)^T), else by own MSE."""
        cands = torch.exp2(pot_candidates(absmax_scale(absmax, bits, True)).double())  # [window, heads]
        return head_scales(rows, cands, bits, partner if self.logit_mse else None)

    def ptf_scale(self, obs: Observer, bits: int, consumer: torch.Tensor | None = None) -> torch.Tensor:
        """PTF: layer-wise 2^e, then per channel 2^(e - 3 + k), k in 0..3 by per-channel MSE; e is chosen among the
        adaptive-rounding candidates by the consumer's output MSE (by the PTF-quantized tensor's MSE without one)."""
        tops = [torch.exp2(c.double()) for c in pot_candidates(absmax_scale(obs.absmax, bits, True))]
        return ptf_search(obs.sample(), tops, bits, consumer if self.output_mse else None)


def ptf_search(x: torch.Tensor, tops: list[torch.Tensor], bits: int, consumer: torch.Tensor | None) -> torch.Tensor:
    """Of the PTF scales around each layer-wise candidate in ``tops`` (``_ptf_scales``), the one of least error on the
    consumer's output (on ``x`` itself without a consumer)."""
    options = [_ptf_scales(x, top, bits) for top in tops]
    errors = torch.stack([quant_error(x, s, 0, bits, True, consumer) for s in options])
    return options[int(errors.argmin())]


def _ptf_scales(x: torch.Tensor, top: torch.Tensor, bits: int) -> torch.Tensor:
    """FQ-ViT's power-of-two factors: per channel (last axis of ``x``) the 2^(k - 3) * top, k in 0..3, of least MSE."""
    cands = [top * 2.0 ** -(PTF_LEVELS - 1 - k) for k in range(PTF_LEVELS)]
    errors = torch.stack([((fake_quant(x, s, bits, True) - x) ** 2).mean(0) for s in cands])
    return top * torch.exp2((errors.argmin(0) - (PTF_LEVELS - 1)).double())

"""RepQ-ViT: scale re-parameterisation for post-training quantization of vision transformers (Li, Xiao, Liu, Wu and
Zhang, ICCV 2023).

- Post-LayerNorm activations: per-channel asymmetric quantizers (scale s_c, zero point z_c) are re-parameterised into
  one layer-wise quantizer, s~ = mean(s), z~ = mean(z), r_c = s_c / s~, by folding into the LayerNorm affine
  (gamma' = gamma / r, beta' = (beta + s (z - z~)) / r) and into the next Linear's input columns (W' = W diag(r),
  b' = b - W' s (z - z~) / r; quant.graph.norm_linear.fold_channel_affine). Our reading: the fold is computed from the
  channel ranges [min_c, max_c] without rounding the zero points, so it is independent of the bit-width and one
  calibration serves every bit-width map: channel c's range is mapped onto the common range [m, m + mean(range)],
  m = mean(range) * mean(min_c / range_c) (what the paper's fold does with un-rounded zero points). The layer-wise
  quantizer then has a zero point, which the integer LayerNorm adds through its beta (exact) and the Linear folds into
  its bias.
- Post-softmax: the log-sqrt(2) quantizer, code = clamp(round(-2 log2 A), 0, 2^b - 1), value 2^(-code / 2), executed
  with a fixed-point sqrt(2) = 181/128 in the integer softmax's rounding and in the attn @ V decode
  (hwsim.kernels.softmax). Two departures, both forced by integer hardware: the top code stands for 0 (the paper
  zeroes codes beyond the range in float, which needs one more level), and the code width is min(abits, 4), because
  wider log-sqrt(2) codes decode to integers beyond the PE's 16-bit operand (and add only probabilities below 2^-7).
- Other activations: per-tensor, clipped at the percentile in {1, 0.99999, 0.9999, 0.999} of least MSE (the paper's
  calibration); asymmetric with a zero point where the integer program allows one (post-LayerNorm, post-GELU),
  symmetric elsewhere (MatMul operands per head, the attention output, the image), because only a Linear consumes a
  zero point.
- Weights: per output channel; the paper's asymmetric per-channel quantizer becomes symmetric (the PE array is
  signed), its clipping ratio searched by the layer's output MSE (quant.quantizer).
- Scales are floats, requantization dyadic multiply-shift. The paper's post-GELU quantizer is the same uniform one.
- Calibration: the paper's 32 images by default (``vitsim quantize --calib``). Nothing was tuned.
"""
from __future__ import annotations

import torch

from quant.graph.capture import Captured
from quant.graph.norm_linear import channel_ranges, fold_channel_affine, norm_linear_pairs
from quant.methods.base import Method
from quant.observers import Observer
from quant.parts import absmax_scale
from quant.quantizer import Quantizer, percentile_mse

CALIBRATION_IMAGES = 32
LOG_SQRT2_MAX_BITS = 4


@torch.no_grad()
def reparameterise_post_layernorm(captured: Captured, calib: torch.Tensor) -> None:
    """Channel-wise to layer-wise (module docstring): every LayerNorm -> Linear pair gets the common per-channel
    range, folded into the LayerNorm and the Linear; the float model is unchanged."""
    pairs = norm_linear_pairs(captured)
    ranges = channel_ranges(captured, [p.norm for p in pairs], calib)
    for pair in pairs:
        lo, hi = ranges[pair.norm].lo, ranges[pair.norm].hi
        width = (hi - lo).clamp(min=1e-8)
        r = width / width.mean()
        common_min = width.mean() * (lo / width).mean()
        fold_channel_affine(captured, pair, r, common_min - lo / r)


class RepQViT(Method):
    name = "repq"
    softmax_log2_bits = LOG_SQRT2_MAX_BITS
    softmax_sqrt2 = True
    calibration_images = CALIBRATION_IMAGES

    def softmax_code_bits(self, abits: int) -> int | None:
        return min(abits, LOG_SQRT2_MAX_BITS)

    def prepare(self, captured: Captured, calib: torch.Tensor) -> None:
        reparameterise_post_layernorm(captured, calib)

    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        return Quantizer(f"Int{bits}WeightPerChannelFloat", observer="mse").fit(weight, inputs=inputs).scale

    def tensor_scale(self, obs: Observer, bits: int, signed: bool = True,
                     consumer: torch.Tensor | None = None) -> torch.Tensor:
        return percentile_mse(obs, bits, signed, asymmetric=False)[0]

    def zero_point_scale(self, obs: Observer, bits: int,
                         consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        return percentile_mse(obs, bits, True, asymmetric=True)

    def ptf_format(self, obs: Observer, bits: int,
                   consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """The re-parameterised post-LayerNorm activation: one asymmetric scale and zero point."""
        return percentile_mse(obs, bits, True, asymmetric=True)

    def per_head_scales(self, absmax: torch.Tensor, rows: torch.Tensor, bits: int,
                        partner: torch.Tensor | None = None) -> torch.Tensor:
        return absmax_scale(absmax, bits, True)

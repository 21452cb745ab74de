"""PFCR: progressive fine-to-coarse reconstruction for accurate low-bit post-training quantization of vision
transformers (Ding et al., 2024; abstract only, no public code: what follows is our reading, on vitsim's
reconstruction engine, quant.reconstruct).

- Units, fine to coarse (quant.graph.units): first every attention branch with its shortcut and every MLP branch with
  its shortcut (the paper's finest units), then each block, then pairs of blocks, then all blocks together; each unit
  is reconstructed against the float model's output of the same unit, its input taken from the quantized model
  (units reconstructed so far included). POS, the paper's progressive optimisation with diminishing granularity, is
  this schedule run in two stages: the branch units alone first, then the coarser units, each stage continuing from
  the rounding and scales the previous one learnt.
- What is learnt: AdaRound rounding of every weight and LSQ scales of every GEMM-operand activation (float scales:
  requantization is dyadic multiply-shift, as I-ViT's; our choice, the paper only says "uniform"), the QDrop-style
  mixing of float and quantized activations with probability 0.5 (BRECQ / QDrop machinery, as the paper builds on).
- Quantizers (the paper: uniform for weights and most activations, log2 for post-softmax). Where the abstract is
  silent we start from the strongest PTQ initialisation vitsim has, as I&S-ViT starts from RepQ-ViT's: the
  post-LayerNorm activations re-parameterised channel-wise -> layer-wise and folded into the LayerNorm and the next
  Linear (quant.methods.repq.reparameterise_post_layernorm), then quantized per tensor with a zero point, clipped at
  the percentile of least MSE; weights per output channel, symmetric, scale by the layer's output MSE; other
  activations per tensor, symmetric, by the consumer's output MSE; GELU output with a zero point; MatMul operands per
  head at the absmax step (LSQ moves them; starting them from P^2-ViT's logit-error search instead lost 0.5-0.9 pt
  on held-out images); post-softmax 4-bit log codes, executed as shifts in attn @ V: base sqrt(2) (RepQ-ViT's, with
  the fixed-point sqrt(2)) at MatMuls of 4 activation bits or more, base 2 (the paper's log2) below. The first and
  last GEMM stay at 8 bits as in every vitsim method.
- Schedule: ``ITERATIONS`` per unit and stage (not tuned; fewer than the 20 000 of BRECQ's code, because the units of
  vitsim's models are small), batch 32, Adam with cosine decay, lr 1e-3 for the rounding and ``LR_SCALE`` for the
  scales (learnt as log2 of the scale, so an Adam step is a relative change; QDrop's 4e-5 on the scale itself moves
  a log2 scale by 1 % at most in 300 steps), 256 calibration images by default (``vitsim quantize --calib``).
- Tuned on 2 000 held-out training images (bench/tune_pfcr.py, never test images): ``LR_SCALE``, the
  initialisation and the post-softmax codes. Fake-quant top-1 at W3A3 / W4A4 (fp32 92.40 % on those images): plain
  post-LayerNorm quantizer at lr 4e-5 86.85 % / -; re-parameterised at 4e-5 87.80 / 90.95 %; re-parameterised at
  1e-3 89.20 / 91.40 % (the defaults); with per-head steps by the logits' error 88.35 / 90.90 %. Post-softmax codes
  (one held-out set for all): W4A4 log2 91.35 / 91.80 / 91.75 % at seeds 0 / 1 / 2, log-sqrt(2) 91.65 / 91.90 /
  91.90 %, SULQ 91.20 % (seed 0); W3A3 log2 88.75 %, log-sqrt(2) 88.15 % (seed 0). Not better, within the seeds'
  spread of 0.45 pt: 1 024 calibration images (W4A4 log2 91.50 %, log-sqrt(2) 91.00 %) and 600 iterations (log2
  91.10 %).
"""
from __future__ import annotations

import torch

from quant.graph.capture import Captured
from quant.graph.units import units
from quant.methods.base import Method
from quant.methods.isvit import sulq_eta
from quant.methods.repq import reparameterise_post_layernorm
from quant.observers import Observer
from quant.parts import absmax_scale
from quant.quantizer import Quantizer, percentile_mse
from quant.reconstruct import ReconConfig, reconstruct

STAGES = (("branch",), ("block", "blocks:2", "blocks:all"))
ITERATIONS = 300
DROP = 0.5
LR_SCALE = 1e-3
SOFTMAX_CODE_BITS = 4
SOFTMAX_CODES = ("auto", "log2", "sqrt2", "sulq")
SQRT2_MIN_ABITS = 4   # "auto": log-sqrt(2) codes at MatMuls of at least this many activation bits, log2 below


class PFCR(Method):
    name = "pfcr"
    softmax_log2_bits = SOFTMAX_CODE_BITS

    def __init__(self, iterations: int = ITERATIONS, stages: tuple[tuple[str, ...], ...] = STAGES,
                 drop: float = DROP, lr_scale: float = LR_SCALE, reparameterise: bool = True,
                 softmax: str = "auto", seed: int = 0) -> None:
        """``reparameterise=False`` starts from the plain post-LayerNorm quantizer (symmetric, per tensor);
        ``softmax`` picks the post-softmax codes, all ``SOFTMAX_CODE_BITS`` wide: "log2" (the paper's), "sqrt2"
        (RepQ-ViT's log-sqrt(2)), "sulq" (I&S-ViT's shifted log2) or "auto" (the default: log-sqrt(2) at MatMuls of
        ``SQRT2_MIN_ABITS`` activation bits or more, log2 below). The options are for the tuning script and
        ablations (bench/tune_pfcr.py)."""
        if softmax not in SOFTMAX_CODES:
            raise ValueError(f"softmax: expected one of {', '.join(SOFTMAX_CODES)}, got {softmax!r}")
        self.iterations, self.stages, self.drop, self.lr_scale, self.seed = iterations, stages, drop, lr_scale, seed
        self.reparameterise, self.softmax = reparameterise, softmax

    def softmax_uses_sqrt2(self, abits: int) -> bool:
        return self.softmax == "sqrt2" or (self.softmax == "auto" and abits >= SQRT2_MIN_ABITS)

    def softmax_eta(self, obs: Observer, bits: int) -> int:
        return sulq_eta(obs, bits) if self.softmax == "sulq" else 0

    def prepare(self, captured: Captured, calib: torch.Tensor) -> None:
        if self.reparameterise:
            reparameterise_post_layernorm(captured, calib)

    # --- initial scales -------------------------------------------------------------------------------------------
    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        return Quantizer(f"Int{bits}WeightPerChannelFloat", observer="mse").fit(weight, inputs=inputs).scale

    def tensor_scale(self, obs: Observer, bits: int, signed: bool = True,
                     consumer: torch.Tensor | None = None) -> torch.Tensor:
        spec = f"{'' if signed else 'U'}Int{bits}ActPerTensorFloat"
        return Quantizer(spec, observer="mse").fit(obs, consumer=consumer).scale

    def zero_point_scale(self, obs: Observer, bits: int,
                         consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        q = Quantizer(f"ShiftedInt{bits}ActPerTensorFloat", observer="mse").fit(obs, consumer=consumer)
        return q.scale, int(q.zero_point)

    def ptf_format(self, obs: Observer, bits: int,
                   consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """The re-parameterised post-LayerNorm activation: one asymmetric scale and zero point (RepQ-ViT's)."""
        if not self.reparameterise:
            return self.ptf_scale(obs, bits, consumer), 0
        return percentile_mse(obs, bits, True, asymmetric=True)

    def per_head_scales(self, absmax: torch.Tensor, rows: torch.Tensor, bits: int,
                        partner: torch.Tensor | None = None) -> torch.Tensor:
        return absmax_scale(absmax, bits, True)

    # --- progressive reconstruction -------------------------------------------------------------------------------
    def refine(self, qg, calib: torch.Tensor, progress: bool = False) -> None:
        config = ReconConfig(iterations=self.iterations, rounding=True, scales=True, pot=False, drop=self.drop,
                             lr_scale=self.lr_scale, seed=self.seed)
        blocks = len(units(qg.gm, "block"))
        for i, stage in enumerate(self.stages):
            found = []
            for granularity in stage:
                if granularity == "blocks:all":
                    granularity = f"blocks:{blocks}"
                if granularity == "blocks:2" and blocks <= 2:
                    continue
                found += units(qg.gm, granularity)
            reconstruct(qg, calib, found, config, progress, label=f"pfcr stage {i + 1}")

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
- Quantizers (the paper: uniform for weights and most activations, log2 for post-softmax): weights per output channel,
  symmetric, scale by the layer's output MSE; activations per tensor, symmetric, scale by the consumer's output MSE;
  MatMul operands per head; GELU output with a zero point; post-softmax 4-bit log2 codes (shifts in attn @ V). The
  first and last GEMM stay at 8 bits as in every vitsim method.
- Schedule: ``ITERATIONS`` per unit and stage (not tuned; fewer than the 20 000 of BRECQ's code, because the units of
  vitsim's models are small), batch 32, Adam lr 1e-3 (rounding) and 4e-5 (scales) with cosine decay, 256
  calibration images by default (``vitsim quantize --calib``).
"""
from __future__ import annotations

import torch

from quant.graph.units import units
from quant.methods.base import Method
from quant.observers import Observer
from quant.parts import absmax_scale
from quant.quantizer import Quantizer
from quant.reconstruct import ReconConfig, reconstruct

STAGES = (("branch",), ("block", "blocks:2", "blocks:all"))
ITERATIONS = 300
DROP = 0.5


class PFCR(Method):
    name = "pfcr"
    softmax_log2_bits = 4

    def __init__(self, iterations: int = ITERATIONS, stages: tuple[tuple[str, ...], ...] = STAGES,
                 drop: float = DROP, seed: int = 0) -> None:
        self.iterations, self.stages, self.drop, self.seed = iterations, stages, drop, seed

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

    def per_head_scales(self, absmax: torch.Tensor, rows: torch.Tensor, bits: int,
                        partner: torch.Tensor | None = None) -> torch.Tensor:
        return absmax_scale(absmax, bits, True)

    # --- progressive reconstruction -------------------------------------------------------------------------------
    def refine(self, qg, calib: torch.Tensor, progress: bool = False) -> None:
        config = ReconConfig(iterations=self.iterations, rounding=True, scales=True, pot=False, drop=self.drop,
                             seed=self.seed)
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

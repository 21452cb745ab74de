"""I&S-ViT: an inclusive and stable method for pushing the limit of post-training ViT quantization (Zhong, Hu, Lin,
Chen and Ji, 2023; official code zysxmu/IaS-ViT). Built on RepQ-ViT's re-parameterisation and quantizers
(quant.methods.repq), with two additions.

- SULQ, the shift-uniform-log2 quantizer of post-softmax values: code = clamp(round(-log2(A + eta)), 0, 2^b - 1),
  value 2^-code - eta. The paper quantizes -log2(A + eta) uniformly and rounds the exponent again at dequantization
  so that attn @ V is shifts; we quantize with integer exponents directly (a uniform step of 1, the case the integer
  program can run), so attn @ V is sum_k V_k << (T - c_k) minus eta * sum_k V_k, a per-column bias computed from V
  (hwsim.ops.gemm_ops, hwsim.kernels.softmax: the code is the log2 code of E + eta S). eta is chosen per softmax from
  the paper's grid {0.001, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2, 0.5, 1} by the MSE of the quantized
  probabilities on the calibration sample, and held as a 12-bit fixed-point fraction. The top code stands for 2^-inf
  (value -eta), so 4-bit codes decode to at most 2^14; the code width is min(abits, 4).
- SOS, the three-stage smooth optimisation with block reconstruction (quant.reconstruct, one unit per transformer
  block, plus single-layer units for the GEMMs outside the blocks: patch embedding, classifier, Swin's patch merging):
  1. weights float, activations quantized: each unit's float weights and biases are trained (LayerNorm, scales and
     eta frozen) against the float model's unit output, the unit's input taken from the float model;
  2. re-parameterisation and re-initialised weight quantizers: every weight scale is chosen again for the trained
     weights (per output channel, by MSE);
  3. weights quantized (straight-through rounding), each unit trained again with its input from the quantized model.
  Our reading departs in one place: the paper runs stage 1 with channel-wise post-LayerNorm quantizers and
  re-parameterises them in stage 2; here RepQ-ViT's re-parameterisation is folded before calibration (the integer
  program's post-LayerNorm quantizer is layer-wise, and the fold computed from the channel ranges is what RepQ-ViT's
  stage gives with un-rounded zero points), so stage 1 already sees the layer-wise quantizer.
- Schedule: Adam lr 4e-5 with cosine decay (the paper's), batch 32 and ``ITERATIONS`` per unit and stage instead of
  the paper's batch 64 and 1000, to finish on deit_fmnist within 10 minutes on 2 cores; the paper's 1024 calibration
  images. Not tuned.
"""
from __future__ import annotations

import torch

from hwsim.kernels.softmax import ETA_FRAC_BITS
from quant.graph.units import units
from quant.methods.repq import RepQViT
from quant.observers import Observer
from quant.quantizer import log2_codes, log2_values
from quant.reconstruct import ReconConfig, reconstruct

ETA_GRID = (0.001, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2, 0.5, 1.0)
SULQ_MAX_BITS = 4
ITERATIONS = 400
LR = 4e-5


def sulq_values(p: torch.Tensor, bits: int, eta_num: int) -> torch.Tensor:
    """What SULQ makes of probabilities ``p`` with eta = eta_num / 2^12 (as the integer softmax computes)."""
    eta = eta_num / 2.0 ** ETA_FRAC_BITS
    codes = log2_codes((p.double().clamp(min=0) + eta).clamp(max=1.0), bits)
    return log2_values(codes, bits) - eta


def sulq_eta(obs: Observer, bits: int) -> int:
    """eta (as eta_num / 2^12) from the paper's grid by the MSE of SULQ's values against the float probabilities
    observed at ``obs``."""
    p = obs.sample().reshape(-1)
    errors = []
    for eta in ETA_GRID:
        num = max(1, round(eta * 2 ** ETA_FRAC_BITS))
        errors.append((float(((sulq_values(p, bits, num) - p) ** 2).mean()), num))
    return min(errors)[1]


class ISViT(RepQViT):
    name = "isvit"
    softmax_sqrt2 = False
    calibration_images = 1024

    def __init__(self, iterations: int = ITERATIONS, seed: int = 0) -> None:
        self.iterations, self.seed = iterations, seed

    def softmax_code_bits(self, abits: int) -> int | None:
        return min(abits, SULQ_MAX_BITS)

    def softmax_eta(self, obs: Observer, bits: int) -> int:
        return sulq_eta(obs, bits)

    def refine(self, qg, calib: torch.Tensor, progress: bool = False) -> None:
        found = units(qg.gm, "block") + units(qg.gm, "layer")
        order = {n: i for i, n in enumerate(qg.gm.graph.nodes)}
        found.sort(key=lambda u: order[u.output])
        # stage 1: float weights, quantized activations, float inputs
        stage = ReconConfig(iterations=self.iterations, rounding=False, weights=True, float_weights=True,
                            inputs="float", lr_weight=LR, seed=self.seed)
        reconstruct(qg, calib, found, stage, progress, label="sos stage 1")
        # stage 2: weight quantizers re-initialised for the trained weights
        for g in qg.gemms.values():
            if g.module is not None:
                g.module.wq.set_scale(self.weight_scale(g.module.weight.detach(), None, g.wbits))
                g.module.wq.enabled = True
        # stage 3: quantized weights, inputs from the quantized model
        stage = ReconConfig(iterations=self.iterations, rounding=False, weights=True, inputs="quant", lr_weight=LR,
                            seed=self.seed + 1)
        reconstruct(qg, calib, found, stage, progress, label="sos stage 3")

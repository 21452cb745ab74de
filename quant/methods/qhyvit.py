"""Q-HyViT: post-training quantization of hybrid vision transformers with bridge block reconstruction (Lee, Kwon,
Ko, Kim, Kim and Kim, "Q-HyViT", 2023/2024; code ones-ai/q-hyvit, built on PTQ4ViT's).

Hybrids (MobileViT, EfficientFormer) mix convolutions with BatchNorm and SiLU, depthwise convolutions and transformer
blocks; the paper finds four difficulties there — highly dynamic activation ranges, zero-point overflow,
diverse normalisations, few parameters — and answers them with:

- **Hessian-guided scale search** (PTQ4ViT's, quant.methods.ptq4vit): candidates (alpha + i (beta - alpha) / n) Delta_0
  with alpha = 0.01, beta = 1.2, n = 100 around the absmax step, weights (per output channel) and input alternately,
  3 rounds, each candidate scored by the layer-output error weighted with the squared gradients of the loss at the
  output (KL to the float prediction as a cross-entropy against its pseudo-label: quant.layer_records). Here for every
  Linear and every convolution (their inputs included), and PTQ4ViT's per-head search with twin-uniform softmax codes
  for the MatMuls.
- **A joint choice per layer of the activation's granularity {layer, channel} and scheme {symmetric,
  asymmetric}**, by the same loss. Channel-wise activations apply where the integer program executes them exactly:
  the input of a depthwise convolution (each output channel reads one input channel, so its accumulator keeps one
  scale; the paper also quantizes grouped and depthwise convolutions' activations channel-wise). Asymmetric ranges
  always include zero: an all-positive tensor would otherwise put its zero point below the code range, where it clamps
  (the paper's zero-point overflow), so the range is [min(x_min, 0), max(x_max, 0)]. The program carries one zero
  point per tensor, so the channel-wise option is symmetric.
- **Bridge block reconstruction**: the blocks where convolutions hand over to transformer blocks and back (a MobileViT
  block: quant.graph.units.bridge_prefixes) are reconstructed as units by the shared engine (quant.reconstruct:
  AdaRound on their weights, input from the quantized model, the float block's output as target), so the error the
  hand-over accumulates is corrected where it arises. The paper reconstructs a layer inside a bridge block against the
  whole block's output; we learn the whole block's rounding against it at once (BRECQ's block unit).

Our reading fills gaps: the first and last GEMM stay at 8 bits as in every vitsim method; scales are floats and
requantization is dyadic (the paper's fake quantization has no integer form); post-GELU/post-SiLU operands take the
joint choice above instead of PTQ4ViT's twin-uniform codes. Calibration: the paper's 32 images. ``ITERATIONS`` of
bridge reconstruction were not tuned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from quant.fakequant import fake_quant_ste
from quant.graph.units import bridge_units
from quant.layer_records import record_convs, record_gemms
from quant.methods.ptq4vit import PTQ4ViT, ROUNDS, candidates
from quant.parts import absmax_scale, fake_quant, qrange
from quant.reconstruct import ReconConfig, reconstruct

CALIBRATION_IMAGES = 32
ITERATIONS = 300


@dataclass
class ActFormat:
    """One activation option: granularity (a scale per channel along the map's channel axis, or one), scheme."""
    scale: torch.Tensor          # [] or [C]
    zero_point: int
    channel: bool

    def apply(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        scale = self.scale.reshape(1, -1, *[1] * (x.dim() - 2)) if self.channel else self.scale
        return fake_quant_ste(x, scale.to(x.dtype), bits, True, self.zero_point)


def asymmetric(x: torch.Tensor, scale: torch.Tensor, bits: int) -> ActFormat:
    """The asymmetric format of step ``scale`` whose range starts at min(x_min, 0): the zero point never leaves the
    code range (Q-HyViT's zero-point overflow)."""
    lo, hi = qrange(bits, True)
    low = min(float(x.min()), 0.0)
    zero = int(min(max(lo - torch.floor(torch.tensor(low) / scale + 0.5), lo), hi))
    return ActFormat(scale.reshape(()), zero, False)


def _weighted_error(out_hat: torch.Tensor, out: torch.Tensor, grad2: torch.Tensor | None, channel_axis: int
                    ) -> torch.Tensor:
    """Per output channel: sum of grad^2 (O^ - O)^2 over every other axis (plain squared error without gradients)."""
    d2 = (out_hat - out) ** 2
    if grad2 is not None:
        d2 = d2 * grad2
    return d2.transpose(0, channel_axis).reshape(d2.shape[channel_axis], -1).sum(1)


class QHyViT(PTQ4ViT):
    name = "qhyvit"
    calibration_images = CALIBRATION_IMAGES

    def __init__(self, iterations: int = ITERATIONS, seed: int = 0) -> None:
        self.iterations, self.seed = iterations, seed

    @torch.no_grad()
    def refine(self, qg, calib: torch.Tensor, progress: bool = False) -> None:
        images = calib[:CALIBRATION_IMAGES]
        linears, matmuls = record_gemms(qg, images, grads=True)
        convs = record_convs(qg, images, grads=True)
        # the image is quantized by the program's input step, symmetric (hwsim.executor.quantize_input)
        image_sites = {n.meta["path"] for n in qg.gm.graph.nodes
                       if n.meta.get("kind") == "site" and n.args[0].op == "placeholder"}
        for name, g in qg.gemms.items():
            asym = g.inputs[0].name not in image_sites
            if g.kind == "linear":
                rec = linears[name]
                self._search(g, rec.x, rec.out, rec.grad2, lambda x, w, b: x @ w.t() + b, False, asym)
            elif g.kind == "conv2d":
                rec, m = convs[name], g.module
                self._search(g, rec.x, rec.out, rec.grad2,
                             lambda x, w, b, m=m: F.conv2d(x, w, b, m.stride, m.padding, 1, m.groups),
                             m.groups > 1 and m.groups == rec.x.shape[1], asym)
            else:
                self._search_matmul(g, matmuls[name])
        qg.set_mode("quant")
        found = bridge_units(qg.gm)
        if found and self.iterations:
            with torch.enable_grad():
                reconstruct(qg, calib, found, ReconConfig(iterations=self.iterations, rounding=True, seed=self.seed),
                            progress, label="q-hyvit bridge blocks")

    def _search(self, g, x: torch.Tensor, out: torch.Tensor, grad2: torch.Tensor | None,
                forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
                depthwise: bool, asym_allowed: bool) -> None:
        """Alternate the weights' per-channel step and the input's format (scheme x granularity), ``ROUNDS`` times;
        the output's channels are on axis 1 (a Linear's rows [n, out], a convolution's maps [n, out, h, w])."""
        channel_axis = 1
        site, wq = g.inputs[0], g.module.wq
        w = g.module.weight.detach().double()
        bias = None if g.module.bias is None else g.module.bias.detach().double()
        wview = (-1,) + (1,) * (w.dim() - 1)
        wbase = absmax_scale(w.reshape(len(w), -1).abs().amax(1), wq.bits, True)
        bits = site.bits
        sym = [ActFormat(s.reshape(()), 0, False)
               for s in candidates(absmax_scale(x.abs().max().reshape(()), bits, True))]
        span = max(float(x.max()), 0.0) - min(float(x.min()), 0.0)
        asym = [asymmetric(x, s, bits) for s in candidates(torch.tensor(max(span, 1e-12) / (2**bits - 1)))]
        per_channel = candidates(absmax_scale(x.transpose(0, 1).reshape(x.shape[1], -1).abs().amax(1), bits, True)) \
            if depthwise else None
        groups_of_out = None if per_channel is None else torch.arange(len(w)) // (len(w) // x.shape[1])
        x_hat, act = x, None
        for _ in range(ROUNDS):
            scales = candidates(wbase)
            errors = torch.stack([_weighted_error(forward(x_hat, fake_quant(w, s.reshape(wview), wq.bits, True), bias),
                                                  out, grad2, channel_axis) for s in scales])
            w_scale = scales.gather(0, errors.argmin(0)[None])[0]
            w_hat = fake_quant(w, w_scale.reshape(wview), wq.bits, True)
            total = lambda f: float(_weighted_error(forward(f.apply(x, bits), w_hat, bias), out, grad2,  # noqa: E731
                                                    channel_axis).sum())
            options = [min(sym, key=total)] + ([min(asym, key=total)] if asym_allowed else [])
            if per_channel is not None:  # separable: output channel o depends on input channel o // m alone
                per_out = torch.stack([_weighted_error(forward(ActFormat(s, 0, True).apply(x, bits), w_hat, bias),
                                                       out, grad2, channel_axis) for s in per_channel])
                per_in = torch.zeros(len(per_channel), x.shape[1], dtype=per_out.dtype).index_add_(1, groups_of_out,
                                                                                                    per_out)
                options.append(ActFormat(per_channel.gather(0, per_in.argmin(0)[None])[0], 0, True))
            act = min(options, key=total)
            x_hat = act.apply(x, bits)
        wq.set_scale(w_scale)
        site.set_format(act.scale, axis=-3 if act.channel else None, zero_point=act.zero_point, signed=True)
        site.twin_m = 0

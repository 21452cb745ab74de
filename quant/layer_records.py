"""Per-GEMM records of the float model on calibration images, aligned row by row: every Linear's input X, output O and
(optionally) the gradient of the task loss at O; every MatMul's two operands and its product; every convolution's
input map, output map and gradient (``record_layers``).

The loss is PTQ4ViT's (Yuan et al., ECCV 2022): cross-entropy against the float model's own prediction (a pseudo
label), whose squared output gradients stand for the Hessian diagonal of the layer output (the Fisher
approximation), so a layer-output error is weighted by how much it moves the prediction. The methods that search a
scale by a layer's output error (quant.methods.ptq4vit, quant.methods.mptq) read these records; the fake-quant graph
runs in float mode while recording, so they are the float model's tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from quant.sites import QuantGraph


@dataclass
class LinearRecord:
    x: torch.Tensor                  # [rows, in]
    out: torch.Tensor                # [rows, out] (bias included)
    grad2: torch.Tensor | None       # [rows, out] squared gradients of the loss at the output


@dataclass
class MatMulRecord:
    a: torch.Tensor                  # [B, H, M, K]
    b: torch.Tensor                  # [B, H, K, N]
    out: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.out = self.a @ self.b


@dataclass
class ConvRecord:
    x: torch.Tensor                  # [N, C, H, W]
    out: torch.Tensor                # [N, O, H', W'] (bias included)
    grad2: torch.Tensor | None       # [N, O, H', W'] squared gradients of the loss at the output


def record_layers(qg: QuantGraph, images: torch.Tensor, grads: bool = True, max_rows: int = 4096, seed: int = 0
                  ) -> tuple[dict[str, LinearRecord], dict[str, MatMulRecord], dict[str, ConvRecord]]:
    """Records of every Linear, MatMul and convolution of ``qg`` on ``images``, from one forward (and backward) pass:
    at most ``max_rows`` Linear rows (the same random rows for X, O and the gradients), whole convolution maps."""
    kept: dict[str, dict[str, list]] = {"linear": {}, "conv2d": {}}
    operands: dict[str, torch.Tensor] = {}
    hooks = []
    for name, g in qg.gemms.items():
        if g.kind in kept:
            def keep(module, args, out, name=name, into=kept[g.kind]):
                if out.requires_grad:
                    out.retain_grad()
                into[name] = [args[0].detach(), out]
            hooks.append(g.module.register_forward_hook(keep))
        elif g.kind == "matmul":
            for site in g.inputs:
                def grab(module, args, out, key=site.name):
                    operands[key] = args[0].detach()
                hooks.append(site.register_forward_hook(grab))
    qg.set_mode("float")
    try:
        with torch.enable_grad():
            logits = qg(images.float())
            if grads:
                F.cross_entropy(logits, logits.detach().argmax(-1)).backward()
    finally:
        for h in hooks:
            h.remove()
        qg.zero_grad(set_to_none=True)
    convs = {name: ConvRecord(x.double(), out.detach().double(),
                              out.grad.double() ** 2 if grads and out.grad is not None else None)
             for name, (x, out) in kept["conv2d"].items()}
    linears = kept["linear"]
    gen = torch.Generator().manual_seed(seed)
    lin = {}
    for name, (x, out) in linears.items():
        rows_x = x.reshape(-1, x.shape[-1]).double()
        rows_o = out.detach().reshape(-1, out.shape[-1]).double()
        g2 = out.grad.reshape(-1, out.shape[-1]).double() ** 2 if grads and out.grad is not None else None
        if len(rows_x) > max_rows:
            pick = torch.randperm(len(rows_x), generator=gen)[:max_rows]
            rows_x, rows_o = rows_x[pick], rows_o[pick]
            g2 = None if g2 is None else g2[pick]
        lin[name] = LinearRecord(rows_x, rows_o, g2)
    mm = {name: MatMulRecord(operands[g.inputs[0].name].double(), operands[g.inputs[1].name].double())
          for name, g in qg.gemms.items() if g.kind == "matmul"}
    return lin, mm, convs


def record_gemms(qg: QuantGraph, images: torch.Tensor, grads: bool = True,
                 max_rows: int = 4096, seed: int = 0) -> tuple[dict[str, LinearRecord], dict[str, MatMulRecord]]:
    """The Linear and MatMul records of ``record_layers``."""
    linears, matmuls, _ = record_layers(qg, images, grads, max_rows, seed)
    return linears, matmuls


def record_convs(qg: QuantGraph, images: torch.Tensor, grads: bool = True) -> dict[str, ConvRecord]:
    """The convolution records of ``record_layers``."""
    return record_layers(qg, images, grads)[2]

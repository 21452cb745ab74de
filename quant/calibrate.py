"""Calibrate once: trace the model, apply the method's float passes, and observe every quantization site.

``calibrate(model, images, method)`` returns a ``Calibration`` (the prepared traced graph and one Observer per site),
and ``Calibration.quantize(bits)`` builds a quantized model from it at any bit-width map without running the float
model again: N maps cost one calibration plus N scale choices (``bench/calibrate_once.py`` measures the speed-up).
Observers record the float model's tensors at each site (quant.observers): the last axis is the channel axis, and for
MatMul operands (``head`` sites) rows are ``[heads * contraction]`` so per-head ranges and the q/k rows that the
logit-error search needs are both at hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from models.progress import progress as show
from quant.fakequant import ActQuant
from quant.graph.capture import Captured, capture
from quant.observers import Observer
from quant.parts import QuantError
from quant.sites import QuantGraph, gemm_layers


def head_rows(x: torch.Tensor, operand: str) -> torch.Tensor:
    """MatMul operand [..., H, M, K] (``a``) or [..., H, K, N] (``b``) as rows [*, H * K]."""
    if operand == "a":
        x = x.movedim(-3, -2)                    # [..., M, H, K]
    else:
        x = x.movedim(-1, -3)                    # [..., N, H, K]
    return x.reshape(-1, x.shape[-2] * x.shape[-1])


def batches(images: torch.Tensor, batch_size: int = 64) -> Iterable[torch.Tensor]:
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]


@torch.no_grad()
def observe(qg: QuantGraph, images: torch.Tensor, progress: bool = False) -> dict[str, Observer]:
    """Run ``images`` through the float graph and fill one Observer per site."""
    if len(images) == 0:
        raise QuantError("the calibration set is empty")
    if not torch.isfinite(images).all():
        raise QuantError("the calibration images contain NaN or Inf")
    obs: dict[str, Observer] = {}

    def record(site: ActQuant, x: torch.Tensor) -> None:
        if site.per_head:
            x = head_rows(x, site.name.rsplit(".", 1)[-1])
        obs.setdefault(site.name, Observer(site.name, seed=len(obs))).update(x)

    qg.set_mode("observe")
    for site in qg.sites.values():
        site.observer = record
    try:
        for batch in show(list(batches(images)), "calibrate", "batch", progress):
            qg(batch.float())
    finally:
        for site in qg.sites.values():
            site.observer = None
        qg.set_mode("float")
    return obs


@dataclass
class Calibration:
    """A traced model prepared by a method's float passes, with the statistics of every site."""

    captured: Captured
    observers: dict[str, Observer]
    method: object
    images: int
    memo: dict[tuple[str, str, int], Any] = field(default_factory=dict)  # scale choices by (kind, site, bits)
    data: torch.Tensor | None = None     # the calibration images, for methods that learn (Method.refine)

    def layers(self) -> dict[str, str]:
        return gemm_layers(self.captured)

    def quantize(self, bits: dict[str, dict[str, int]], progress: bool = False) -> QuantGraph:
        """A fake-quant model at ``bits`` (per GEMM name), scales chosen by the method from the cached statistics,
        then refined by the method where it learns (reconstruction)."""
        from quant.formats import assign_formats

        qg = QuantGraph.build(self.captured, bits, self.method.softmax_code_bits,
                              getattr(self.method, "softmax_per_head", False))
        assign_formats(qg, self.observers, self.method, self.memo)
        qg.set_mode("quant")
        if self.data is not None:
            self.method.refine(qg, self.data, progress)
        return qg


def calibrate(model: torch.nn.Module, images: torch.Tensor, method: object, progress: bool = False) -> Calibration:
    """Capture ``model`` (never modified), let ``method`` re-parameterise the float graph, observe every site."""
    captured = capture(model, tuple(images.shape[1:]))
    method.prepare(captured, images)
    probe_bits = {name: {"wbits": 8, "abits": 8} for name in gemm_layers(captured)}
    qg = QuantGraph.build(captured, probe_bits, method.softmax_code_bits,
                          getattr(method, "softmax_per_head", False))
    observers = observe(qg, images, progress)
    return Calibration(captured, observers, method, int(len(images)), data=images.detach().clone())

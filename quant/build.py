"""Quantize any traced model: calibrate once (quant.calibrate), choose every scale (the method, quant.formats), and
wrap the fake-quant graph with its lowering (quant.lower) as a ``QuantModel``.

``quantize_model(model, calib, method, bits_map)`` never modifies ``model``. Mixed-precision maps address the GEMMs by
name (``model_layers``): timm module paths plus the attention products ``...attn.matmul_qk`` / ``...attn.matmul_av``.
By default the first and the last GEMM (patch embedding, classifier) stay at 8 bits.
"""
from __future__ import annotations

from typing import Any

import torch

from hwsim.ir import Program
from quant.calibrate import Calibration, calibrate
from quant.lower import lower
from quant.mixed_precision import MixedPrecisionMap
from quant.parts import QuantError
from quant.sites import QuantGraph


class QuantModel(torch.nn.Module):
    """A fake-quant model (float64, integer nonlinear ops by default) and the integer program it lowers to."""

    def __init__(self, qg: QuantGraph, name: str, metadata: dict[str, Any]) -> None:
        super().__init__()
        self.qg, self.model_name, self.metadata = qg, name, metadata

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.qg(images.double()).float()

    @torch.no_grad()
    def forward_int(self, images: torch.Tensor) -> torch.Tensor:
        """The output's integer codes, as the integer program's output holds them."""
        out = self.qg.sites["logits"]
        return torch.floor(self.qg(images.double()) / out.scale + 0.5).long()

    def export(self) -> Program:
        """The integer program computing this model's integers (hwsim runs it)."""
        return lower(self.qg, self.model_name, self.metadata)


def model_layers(calibration: Calibration) -> dict[str, str]:
    return calibration.layers()


def default_map(wbits: int, abits: int, first_last_8bit: bool = True) -> MixedPrecisionMap:
    """Uniform bits; ``first_last_8bit`` keeps the first and last GEMM at 8 bits (PTQ4ViT / RepQ-ViT practice)."""
    mp = MixedPrecisionMap.uniform(wbits, abits)
    if first_last_8bit:
        mp.first_last = {"wbits": 8, "abits": 8}
    return mp


def quantize_calibrated(calibration: Calibration, bits_map: MixedPrecisionMap, name: str = "model",
                        metadata: dict[str, Any] | None = None, integer_nonlinear: bool = True,
                        progress: bool = False) -> QuantModel:
    """One quantized model from a calibration: the cheap step of quantizing at many bit-width maps (for methods that
    reconstruct, the reconstruction runs here, per map)."""
    layers = calibration.layers()
    bits = bits_map.resolve(layers)
    qg = calibration.quantize(bits, progress)
    qg.set_integer_nonlinear(integer_nonlinear)
    meta = {"method": calibration.method.name, "bits": bits, "calibration_images": calibration.images,
            "input_shape": list(calibration.captured.input_shape), **(metadata or {})}
    return QuantModel(qg, name, meta)


def quantize_model(model: torch.nn.Module, calib: torch.Tensor, method, bits_map: MixedPrecisionMap,
                   name: str = "model", metadata: dict[str, Any] | None = None, progress: bool = False) -> QuantModel:
    """Calibrate on ``calib`` (float images [n, c, h, w]) and build the quantized model."""
    if len(calib) == 0:
        raise QuantError("the calibration set is empty")
    return quantize_calibrated(calibrate(model, calib, method, progress), bits_map, name, metadata, progress=progress)

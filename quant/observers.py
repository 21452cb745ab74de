"""Observers: running statistics of a tensor seen during calibration, and scale searches.

- min-max: running max |x| (per tensor or per channel of the last axis);
- percentile: |x| quantile over a kept sample (RepQ-ViT / PTQ4ViT style clipping);
- MSE: choose the candidate scale whose quantize-dequantize error is smallest (FQ-ViT's PTF search, P^2-ViT's
  adaptive power-of-two rounding); output-MSE variants live with the method that uses them.
Calibration data with NaN or Inf is rejected with the name of the tensor that carried it.
"""
from __future__ import annotations

import torch

from quant.parts import QuantError

SAMPLE_ROWS = 4096


class Observer:
    """Running per-channel (last axis) min, max and |max| plus a bounded random sample of rows."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.absmax_c: torch.Tensor | None = None
        self.min_c: torch.Tensor | None = None
        self.max_c: torch.Tensor | None = None
        self.samples: list[torch.Tensor] = []
        self.count = 0
        self._gen = torch.Generator().manual_seed(seed)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double()
        if not torch.isfinite(x).all():
            raise QuantError(f"calibration produced NaN or Inf at {self.name!r}; check the calibration images")
        rows = x.reshape(-1, x.shape[-1])
        amax, lo, hi = rows.abs().amax(0), rows.amin(0), rows.amax(0)
        if self.absmax_c is None:
            self.absmax_c, self.min_c, self.max_c = amax, lo, hi
        else:
            self.absmax_c = torch.maximum(self.absmax_c, amax)
            self.min_c = torch.minimum(self.min_c, lo)
            self.max_c = torch.maximum(self.max_c, hi)
        keep = min(len(rows), max(64, SAMPLE_ROWS // 8))
        self.samples.append(rows[torch.randperm(len(rows), generator=self._gen)[:keep]])
        self.count += len(rows)

    @property
    def absmax(self) -> torch.Tensor:
        if self.absmax_c is None:
            raise QuantError(f"observer {self.name!r} saw no data (empty calibration set?)")
        return self.absmax_c.max()

    def sample(self) -> torch.Tensor:
        rows = torch.cat(self.samples)
        if len(rows) > SAMPLE_ROWS:
            rows = rows[torch.randperm(len(rows), generator=self._gen)[:SAMPLE_ROWS]]
        return rows

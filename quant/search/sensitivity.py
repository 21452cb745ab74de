"""Per-layer sensitivity: the increase of the held-out objective (quant.search.fitness: by default the KL divergence
of the integer model's output from the float model's) when one layer's weights (or activations) alone go from 8 bits
to ``b`` while everything else stays at 8 bits. Measured lazily (only the widths a search asks for) and cached.

Both searches read a move's loss change from this table, summed over layers: the separable reading of MPTQ-ViT's
"loss increase per layer" and our proxy for P^2-ViT's Hessian-trace-weighted quantization error (a measured output
distortion needs no second-order approximation, at one held-out evaluation per layer and width; for small errors the
KL is the Fisher-weighted quadratic form that the Hessian trace approximates, and it adds up over layers).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from quant.search.fitness import HeldOutFitness
from quant.search.space import Config


@dataclass
class Sensitivity:
    fitness: HeldOutFitness
    table: dict[tuple[str, str, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = self.fitness.loss(self.fitness.space.uniform(8, 8))

    def _config(self, layer: str, kind: str, bits: int) -> Config:
        config = self.fitness.space.uniform(8, 8)
        config[layer] = {**config[layer], kind: bits}
        return config

    def prefetch(self, wanted: list[tuple[str, str, int]]) -> None:
        """Measure the ``(layer, kind, bits)`` entries a search is about to read in one batch (see
        HeldOutFitness.prefetch); ``delta`` then reads them from the cache."""
        self.fitness.prefetch([self._config(*k) for k in dict.fromkeys(wanted) if k[2] < 8 and k not in self.table])

    def delta(self, layer: str, kind: str, bits: int) -> float:
        """Loss increase of ``layer``'s ``kind`` (wbits or abits) at ``bits``, the rest at 8 (0 at 8 bits)."""
        if bits >= 8:
            return 0.0
        k = (layer, kind, bits)
        if k not in self.table:
            self.table[k] = self.fitness.loss(self._config(layer, kind, bits)) - self.base
        return self.table[k]

    def estimate(self, config: Config) -> float:
        """Additive estimate of ``config``'s loss increase over the 8-bit model."""
        return sum(self.delta(n, kind, b[kind]) for n, b in config.items() for kind in ("wbits", "abits"))

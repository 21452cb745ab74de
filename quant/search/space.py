"""The search space: per-layer (weight bits, activation bits) for the searchable GEMMs of a calibrated model.

Every width in ``BIT_CHOICES`` lowers and runs bit-exact (2..8-bit operands are GEMM operands hwsim and the RTL take).
The first and last GEMM (patch embedding, classifier) stay at 8 bits, as the uniform maps keep them. A configuration is
a dict ``layer -> {"wbits": w, "abits": a}``; ``to_map`` writes it as a mixed-precision map (layer section).
"""
from __future__ import annotations

from dataclasses import dataclass

from quant.mixed_precision import MixedPrecisionMap

BIT_CHOICES = (2, 3, 4, 5, 6, 8)
Config = dict[str, dict[str, int]]


@dataclass(frozen=True)
class SearchSpace:
    layers: tuple[str, ...]               # searchable GEMMs in graph order
    fixed: tuple[str, ...]                # first and last GEMM, at 8 bits
    choices: tuple[int, ...] = BIT_CHOICES

    @staticmethod
    def from_layers(layers: dict[str, str], choices: tuple[int, ...] = BIT_CHOICES) -> "SearchSpace":
        names = list(layers)
        ends = (names[0], names[-1]) if len(names) > 1 else tuple(names)
        return SearchSpace(tuple(n for n in names if n not in ends), tuple(dict.fromkeys(ends)), tuple(sorted(choices)))

    def uniform(self, wbits: int, abits: int) -> Config:
        return {name: {"wbits": wbits, "abits": abits} for name in self.layers}

    def full(self, config: Config) -> Config:
        """``config`` plus the fixed layers at 8 bits: the bits of every GEMM."""
        return {**{name: {"wbits": 8, "abits": 8} for name in self.fixed}, **config}

    def lower(self, bits: int) -> int | None:
        """The next width below ``bits`` in the choices, or None."""
        below = [b for b in self.choices if b < bits]
        return below[-1] if below else None


def to_map(config: Config) -> MixedPrecisionMap:
    """A mixed-precision map giving every searched layer its bits (global 8/8, first and last at 8)."""
    mp = MixedPrecisionMap.uniform(8, 8)
    mp.first_last = {"wbits": 8, "abits": 8}
    mp.layer = {name: dict(b) for name, b in config.items()}
    return mp


def key(config: Config) -> tuple:
    return tuple(sorted((n, b["wbits"], b["abits"]) for n, b in config.items()))

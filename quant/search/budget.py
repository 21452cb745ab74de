"""What a search must fit in: a bit budget (size-weighted average bits of weights and activations, MPTQ-ViT's and
P^2-ViT's budgets) or, hardware-aware, the energy (uJ) or latency (ms) of one inference on a hardware configuration,
priced by hwsim's cost model on the program lowered once and re-bit-widthed per configuration (hwsim.cost.rebit).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwsim.arch import HardwareConfig
from hwsim.cost import cost
from hwsim.cost.rebit import with_bits
from hwsim.ir import Program
from quant.search.space import Config, SearchSpace, key

METRICS = ("bits", "energy", "latency")


@dataclass
class Budget:
    """``value(config)`` in the metric's unit; a configuration fits when value <= limit."""

    metric: str
    limit: float
    space: SearchSpace
    base: Program                       # any program of the model (lowered once); its layers' widths are replaced
    hw: HardwareConfig | None = None
    cache: dict[tuple, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"budget metric {self.metric!r}, want one of {METRICS}")
        ops = {op.name: op for op in self.base.ops}
        # operand sizes of each layer: weight elements, activation elements (per inference)
        self.sizes = {}
        for name in self.space.layers:
            op = ops[name]
            w = int(np.prod(self.base.tensors[op.params["weight"]].shape)) if "weight" in op.params else 0
            a = sum(int(np.prod(self.base.tensors[t].shape)) for t in op.inputs)
            self.sizes[name] = (w, a)

    def value(self, config: Config) -> float:
        k = key(config)
        if k not in self.cache:
            if self.metric == "bits":
                num = sum(w * config[n]["wbits"] + a * config[n]["abits"] for n, (w, a) in self.sizes.items())
                self.cache[k] = num / sum(w + a for w, a in self.sizes.values())
            else:
                priced = cost(with_bits(self.base, self.space.full(config)), self.hw)
                self.cache[k] = priced.energy_uj if self.metric == "energy" else priced.latency_ms
        return self.cache[k]

    def fits(self, config: Config) -> bool:
        return self.value(config) <= self.limit * (1 + 1e-9)

    def describe(self) -> str:
        unit = {"bits": "average bits", "energy": "uJ", "latency": "ms"}[self.metric]
        return f"{self.metric} <= {self.limit:g} {unit}" + (f" on {self.hw.name}" if self.hw else "")

"""The reconstruction engine shared by the reconstruction-based methods (I&S-ViT's SOS, PFCR / POS, Q-HyViT's bridge
blocks): unit by unit (quant.graph.units), minimise the squared error between the quantized unit's output and the
float model's on calibration images, by learning

- the rounding of the unit's weights: AdaRound (Nagel et al., ICML 2020), codes floor(W/s) + h(V) with the rectified
  sigmoid h(V) = clamp(sigmoid(V)(zeta - gamma) + gamma, 0, 1), zeta 1.1, gamma -0.1, V started at frac(W/s), and the
  regulariser lambda * sum(1 - |2h - 1|^beta), beta annealed from 20 to 2 after a warm-up (20 % of the iterations);
  the rounding is hard (h = [V >= 0]) afterwards, which is what the lowering exports;
- and/or the scales of the unit's activation sites: LSQ (Esser et al., ICLR 2020), optionally kept powers of two (the
  exponent rounds with a straight-through estimator) for shift-only requantization;
- and/or the weights and biases themselves through the straight-through rounding (I&S-ViT's block reconstruction).

The unit's input comes from the quantized model (units already reconstructed included: BRECQ) or from the float model
(I&S-ViT's first SOS stage); with ``drop`` > 0 each activation element of the unit is left unquantized with that
probability during training (QDrop, Wei et al., ICLR 2022). The target is always the float model's unit output,
recorded once before any unit changes. Adam with cosine decay to 0, a fixed batch order from ``seed``: two runs with
the same seed give identical weights, scales and programs.

Defaults follow BRECQ / QDrop's code (batch 32, AdaRound lr 1e-3, lambda 0.01) with fewer iterations than their
20 000, because vitsim's models are small; each method states its own schedule.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.progress import progress as show
from quant.fakequant import ActQuant, QuantConv2d, QuantLinear
from quant.graph.units import Unit
from quant.parts import QuantError
from quant.sites import QuantGraph

INPUTS = ("quant", "float")
LEARNABLE_ROLES = ("tensor", "ptf", "skewed", "head")   # 16-bit internal and log2 softmax sites keep their grids


@dataclass(frozen=True)
class ReconConfig:
    iterations: int = 500
    batch_size: int = 32
    rounding: bool = True                 # AdaRound on the unit's weights
    scales: bool = False                  # LSQ on the unit's activation sites
    weights: bool = False                 # train weights and biases (straight-through rounding)
    float_weights: bool = False           # weights stay unquantized while training (I&S-ViT's first SOS stage)
    pot: bool = True                      # learnt scales stay powers of two
    inputs: str = "quant"                 # where the unit's input comes from
    drop: float = 0.0                     # QDrop: probability of leaving an activation element float
    lr_rounding: float = 1e-3
    lr_scale: float = 4e-5
    lr_weight: float = 4e-5
    reg: float = 0.01                     # AdaRound regulariser weight lambda
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.2
    integer_nonlinear: bool = False       # train through the integer softmax / LayerNorm / GELU (slower)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise QuantError(f"reconstruction inputs {self.inputs!r}, want one of {INPUTS}")
        if not (self.rounding or self.scales or self.weights):
            raise QuantError("reconstruction learns nothing: set rounding, scales or weights")
        if self.float_weights and self.rounding:
            raise QuantError("learning the rounding of weights that stay float: drop rounding or float_weights")
        if not 0.0 <= self.drop < 1.0:
            raise QuantError(f"QDrop probability {self.drop} outside [0, 1)")


@dataclass
class UnitResult:
    unit: str
    error_before: float                   # mean squared error per element of the unit output (first ERROR_IMAGES)
    error_after: float


def _gemms(unit: Unit) -> list[QuantLinear | QuantConv2d]:
    return [m for m in unit.module.modules() if isinstance(m, (QuantLinear, QuantConv2d))]


def _sites(unit: Unit) -> list[ActQuant]:
    return [m for m in unit.module.modules() if isinstance(m, ActQuant) and m.role in LEARNABLE_ROLES and not m.log2]


def _record(gm: torch.fx.GraphModule, images: torch.Tensor, nodes: set, batch: int = 64) -> dict:
    """The values of ``nodes`` when ``gm`` runs ``images`` (one pass, in batches)."""
    parts: dict = {n: [] for n in nodes}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            if n in parts:
                parts[n].append(value)
            return value

    with torch.no_grad():
        for i in range(0, len(images), batch):
            Recorder(gm).run(images[i:i + batch])
    return {n: torch.cat(v) for n, v in parts.items()}


def _batched(module: torch.nn.Module, inputs: list[torch.Tensor], batch: int = 64) -> torch.Tensor | tuple:
    """``module`` on ``inputs`` in batches; a module returning several tensors (a prefix computing a unit's inputs)
    gives a tuple of them, each concatenated over the batches."""
    with torch.no_grad():
        outs = [module(*(x[i:i + batch] for x in inputs)) for i in range(0, len(inputs[0]), batch)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def _as_list(value) -> list[torch.Tensor]:
    return list(value) if isinstance(value, tuple) else [value]


ERROR_IMAGES = 256   # the before / after errors (a diagnostic) are measured on the first images only


def _error(unit: Unit, inputs: list[torch.Tensor], target: torch.Tensor) -> float:
    n = min(len(target), ERROR_IMAGES)
    return float(((_batched(unit.module, [x[:n] for x in inputs]) - target[:n]) ** 2).mean())


def _round_loss(gemms: list, beta: float) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for g in gemms:
        if g.wq.alpha is not None:
            total = total + (1 - (2 * g.wq.rectified() - 1).abs().pow(beta)).sum()
    return total


def reconstruct(qg: QuantGraph, images: torch.Tensor, units: list[Unit], config: ReconConfig = ReconConfig(),
                progress: bool = False, label: str = "reconstruct") -> list[UnitResult]:
    """Reconstruct ``units`` of ``qg`` (extracted from ``qg.gm``) in order on calibration ``images``; ``qg`` is left
    in quant mode with hard rounding and fixed scales, ready to lower (with ``float_weights``, its weights unquantized
    until the caller re-enables their quantizers)."""
    if len(images) == 0:
        raise QuantError("reconstruction needs calibration images")
    images = images.float()   # float32 while learning: what is learnt (hard rounding, scales) is exported exactly
    integer = [m.integer for m in qg.nonlinear()]
    qg.set_integer_nonlinear(config.integer_nonlinear)
    # Float inputs and targets of every unit, recorded in one pass before anything is learnt.
    qg.set_mode("float")
    values = _record(qg.gm, images, {n for u in units for n in u.inputs + [u.output]})
    float_io = [([values[n] for n in u.inputs], values[u.output]) for u in units]
    del values
    qg.set_mode("quant")
    if config.float_weights:
        for g in qg.gemms.values():
            if g.module is not None:
                g.module.wq.enabled = False
    gen = torch.Generator().manual_seed(config.seed)
    results = []
    try:
        with torch.random.fork_rng():   # QDrop draws from the global generator: leave the caller's state alone
            for unit, (float_in, target) in show(list(zip(units, float_io)), label, "unit", progress):
                inputs = float_in if config.inputs == "float" else _as_list(_batched(unit.prefix, [images]))
                results.append(_reconstruct_unit(unit, inputs, target, config, gen))
    finally:
        for m, flag in zip(qg.nonlinear(), integer):
            m.integer = flag
        for site in qg.sites.values():
            site.drop = 0.0
    return results


def _reconstruct_unit(unit: Unit, inputs: list[torch.Tensor], target: torch.Tensor, config: ReconConfig,
                      gen: torch.Generator) -> UnitResult:
    before = _error(unit, inputs, target)
    gemms, sites = _gemms(unit), _sites(unit)
    groups = []
    if config.rounding:
        for g in gemms:
            g.wq.learn_rounding(g.weight)
        groups.append({"params": [g.wq.alpha for g in gemms], "lr": config.lr_rounding})
    if config.scales:
        for s in sites:
            s.learn_scale(config.pot)
        groups.append({"params": [s.lsq for s in sites], "lr": config.lr_scale})
    if config.weights:
        groups.append({"params": [p for g in gemms for p in (g.weight, g.bias) if p is not None], "lr": config.lr_weight})
    groups = [g for g in groups if g["params"]]
    if not groups:
        return UnitResult(unit.name, before, before)
    for s in sites:
        s.drop = config.drop
    optimizer = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.iterations, eta_min=0.0)
    n = len(target)
    warm = int(config.warmup * config.iterations)
    torch.manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=gen)))  # QDrop masks follow the seed
    for step in range(config.iterations):
        idx = torch.randint(0, n, (min(config.batch_size, n),), generator=gen)
        out = unit.module(*(x[idx] for x in inputs))
        loss = ((out - target[idx]) ** 2).flatten(1).sum(1).mean()
        if config.rounding and step >= warm:  # AdaRound's linear temperature decay of beta
            t = (step - warm) / max(1, config.iterations - warm)
            beta = config.beta[1] + (config.beta[0] - config.beta[1]) * (1 - t)
            loss = loss + config.reg * _round_loss(gemms, beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    for g in gemms:
        g.wq.hard = True
    for s in sites:
        s.drop = 0.0
        s.freeze()
    return UnitResult(unit.name, before, _error(unit, inputs, target))

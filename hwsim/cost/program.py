"""Whole-program cost: every op of an integer program priced on a hardware configuration through the ``cost`` hook
its kind registered (hwsim.cost.pricing states the model), with Requants fused into the unit that produces their
input, and totals: cycles, latency at the clock, DRAM traffic, energy by part, MACs, and the configuration's area
(hwsim.cost.area).
"""
from __future__ import annotations

from dataclasses import dataclass

from hwsim.arch import HardwareConfig, load_hardware
from hwsim.cost.area import area_um2
from hwsim.cost.pricing import ENERGY_PARTS, OpCost, PriceContext, packed_bytes
from hwsim.ir.schema import Op, Program

# Layout ops whose output is a view of their input's storage (Concat gathers into a new tensor).
ALIASING_KINDS = ("Reshape", "Permute", "Slice", "Roll")
# A Requant reading one of these (and nothing else reading that accumulator) runs in the producer's output shifters.
FUSING_PRODUCERS = ("Linear", "Conv2d", "MatMul", "Softmax", "LayerNorm", "GELU")


@dataclass
class ProgramCost:
    program: str
    hw: HardwareConfig
    ops: list[OpCost]

    @property
    def cycles(self) -> int:
        return sum(o.cycles for o in self.ops)

    @property
    def compute_cycles(self) -> int:
        return sum(o.compute_cycles for o in self.ops)

    @property
    def latency_ms(self) -> float:
        return self.cycles / (self.hw.clock_mhz * 1e3)

    @property
    def dram_bytes(self) -> int:
        return sum(o.dram_read_bytes + o.dram_write_bytes for o in self.ops)

    @property
    def energy_pj(self) -> dict[str, float]:
        return {part: sum(o.energy_pj[part] for o in self.ops) for part in ENERGY_PARTS}

    @property
    def energy_uj(self) -> float:
        return sum(self.energy_pj.values()) / 1e6

    def by_unit(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.ops:
            out[o.unit] = out.get(o.unit, 0) + o.cycles
        return out

    def totals(self) -> dict:
        area = area_um2(self.hw)
        return {"area_mm2": round(area["total"] / 1e6, 4), "area_um2": {k: round(v, 1) for k, v in area.items()},"cycles": self.cycles, "compute_cycles": self.compute_cycles, "stall_cycles": self.cycles - self.compute_cycles,
                "latency_ms": round(self.latency_ms, 6), "clock_mhz": self.hw.clock_mhz, "dram_bytes": self.dram_bytes,
                "macs": sum(o.macs for o in self.ops), "energy_uj": round(self.energy_uj, 6),
                "energy_pj": {k: round(v, 1) for k, v in self.energy_pj.items()}, "cycles_by_unit": self.by_unit()}

    def to_json(self) -> dict:
        return {"program": self.program, "hw": self.hw.name, "totals": self.totals(), "ops": [o.to_json() for o in self.ops]}


def fused_requants(program: Program) -> dict[str, Op]:
    """Producer op name -> the Requant fused into it."""
    producer = {t: op for op in program.ops for t in op.outputs}
    readers: dict[str, int] = {}
    for op in program.ops:
        for t in op.inputs:
            readers[t] = readers.get(t, 0) + 1
    fused = {}
    for op in program.ops:
        if op.kind != "Requant":
            continue
        src = producer.get(op.inputs[0])
        if src is not None and src.kind in FUSING_PRODUCERS and readers[op.inputs[0]] == 1 and op.inputs[0] not in program.outputs:
            fused[src.name] = op
    return fused


def on_chip(program: Program, hw: HardwareConfig, fused: dict[str, Op]) -> frozenset[str]:
    """Activations kept in the on-chip activation buffer: in program order, each newly stored tensor stays on chip if
    it fits beside every stored tensor still to be read (a greedy first-fit, no eviction). Views made by layout ops
    share their source's storage; fused accumulators are never stored; program inputs and outputs live in DRAM."""
    storage: dict[str, str] = {t: t for t in program.inputs}
    absorbed = {r.inputs[0] for r in fused.values()}
    for op in program.ops:
        for t in op.outputs:
            storage[t] = storage[op.inputs[0]] if op.kind in ALIASING_KINDS else t
    last: dict[str, int] = {}
    for i, op in enumerate(program.ops):
        for t in op.inputs:
            if t in storage:  # constants (a class token, a position embedding) are not activations
                last[storage[t]] = i
    capacity = hw.memory.act_kb * 1024
    resident: set[str] = set()
    live: list[str] = []
    for i, op in enumerate(program.ops):
        live = [k for k in live if last.get(k, -1) >= i]
        for t in op.outputs:
            if storage[t] != t or t in absorbed or t in program.outputs:
                continue
            size = packed_bytes(program.tensors[t])
            if sum(packed_bytes(program.tensors[k]) for k in live) + size <= capacity:
                resident.add(t)
                live.append(t)
    return frozenset(t for t, k in storage.items() if k in resident)


def cost(program: Program, hw: HardwareConfig | None = None) -> ProgramCost:
    """Price every op of ``program`` on ``hw`` (default: the 16x16 preset)."""
    from hwsim.ops import OPS  # registers the op kinds and their pricing hooks

    hw = hw or load_hardware()
    fused = fused_requants(program)
    absorbed = {r.name for r in fused.values()}
    resident = on_chip(program, hw, fused)
    ops = []
    for op in program.ops:
        if op.name in absorbed:
            ops.append(OpCost(op.name, op.kind, "fused"))
            continue
        requant = fused.get(op.name)
        ctx = PriceContext(hw, requant, resident)
        ops.append(OPS[op.kind].cost(op, program, ctx))
    return ProgramCost(program.name, hw, ops)

"""Per-op pricing hooks: each op kind of the registry prices one op on a hardware configuration.

A hook receives the op, the program and a ``PriceContext`` (the hardware, and the Requant fused into the op's output
when there is one) and returns an ``OpCost``: compute cycles on its unit, DRAM bytes, cycles after overlapping
transfers with compute, and energy by part. docs/hardware.md states the model; in short:
- Ops run one after another (as the RTL runs tiles). Constants (weights, biases, shifts, LayerNorm factors) come
  from DRAM. An activation stays in the on-chip activation buffer (``memory.act_kb``) when it fits beside every
  other activation alive at the time (hwsim.cost.program decides, in program order); otherwise its producer writes it
  to DRAM and every reader loads it. DRAM bytes count the tensors' real bit-widths, packed.
- A Requant whose input has one reader and comes from a GEMM or a nonlinear unit is fused: it runs in that unit's
  output shifters (the array's column shifters, rtl/src/shift_requant.v), its output is what leaves the unit, and
  the 32-bit accumulator never reaches DRAM. Other Requants run on the vector path.
- GEMMs (Linear, Conv2d, MatMul) tile on the array. Output-stationary (the RTL): tile cycles are exactly
  rtl/src/gemm_engine.v's; an A row panel (R x K) stays in buffer A for all its column tiles; B (weights, or K/V per
  head) is loaded once when it fits in buffer B, else once per row block. One A panel, one B panel and one output
  tile must fit their buffers (else ``CostError``). With double buffering (half of each buffer fills while the other
  half feeds, so panels must fit half) transfers overlap compute after the first panels arrive; cycles =
  prologue + max(compute, rest of the transfer); without it, compute + transfer. Stalls are the difference.
- Softmax, LayerNorm and GELU rows go to their units (rows split evenly over the units); cycles per row are the RTL
  units' (hwsim.cost.cycles). Energy per element and per row is counted from each unit's datapath (below).
- Add, ReduceSum and stand-alone Requant stream through the vector path, ``vector_lanes`` elements per cycle.
- Layout ops (Reshape, Permute, Slice, Concat, Roll) cost nothing: they are address generation in the DMA that
  moves the tensor anyway.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hwsim.arch import HardwareConfig
from hwsim.cost.cycles import (MODE_LOG2, MODE_LOG_SQRT2, MODE_NAMES, gelu_row_cycles, gemm_schedule, gemm_tile_cycles,
                               k_steps, layernorm_row_cycles, softmax_row_cycles, ws_tile_cycles)
from hwsim.cost.energy import gemm_activity, gemm_energy_pj
from hwsim.ir.schema import Op, Program, TensorSpec

ENERGY_PARTS = ("multiply", "accumulate", "requant", "nonlinear", "vector", "sram", "dram")


class CostError(ValueError):
    """A program that cannot run on the given hardware (e.g. a buffer too small for one tile): a user error."""


@dataclass
class OpCost:
    name: str
    kind: str
    unit: str                      # array, softmax, layernorm, gelu, vector, fused, layout
    compute_cycles: int = 0
    cycles: int = 0                # after overlap with DRAM transfers (>= compute_cycles)
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    macs: int = 0
    mode: str = ""                 # PE mode of a GEMM (int8, int4x2, log2) and passes, e.g. "int8x2"
    energy_pj: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ENERGY_PARTS, 0.0))

    @property
    def stall_cycles(self) -> int:
        return self.cycles - self.compute_cycles

    @property
    def energy_total_pj(self) -> float:
        return sum(self.energy_pj.values())

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "unit": self.unit, "cycles": self.cycles,
                "compute_cycles": self.compute_cycles, "stall_cycles": self.stall_cycles,
                "dram_read_bytes": self.dram_read_bytes, "dram_write_bytes": self.dram_write_bytes, "macs": self.macs,
                "mode": self.mode, "energy_pj": {k: round(v, 3) for k, v in self.energy_pj.items()},
                "energy_total_pj": round(self.energy_total_pj, 3)}


@dataclass(frozen=True)
class PriceContext:
    hw: HardwareConfig
    fused: Op | None = None                     # the Requant fused into this op's output, if any
    resident: frozenset[str] = frozenset()      # activations that stay in the on-chip activation buffer

    @property
    def fused_out(self) -> str | None:
        return None if self.fused is None else self.fused.outputs[0]

    def out_name(self, op: Op) -> str:
        return self.fused_out or op.outputs[0]

    def out_spec(self, op: Op, program: Program) -> TensorSpec:
        return program.tensors[self.out_name(op)]

    def dram_read(self, program: Program, name: str) -> int:
        """Bytes read from DRAM for tensor ``name``: 0 when it is on chip."""
        return 0 if name in self.resident else packed_bytes(program.tensors[name])

    def dram_write(self, op: Op, program: Program) -> int:
        name = self.out_name(op)
        return 0 if name in self.resident else packed_bytes(program.tensors[name])

    def activation_sram_pj(self, op: Op, program: Program) -> float:
        """Reads of the op's on-chip inputs and the write of its on-chip output in the activation buffer."""
        names = [t for t in op.inputs if t in self.resident] + [n for n in [self.out_name(op)] if n in self.resident]
        words = sum(math.ceil(packed_bytes(program.tensors[t]) / 8) for t in names)
        return words * self.hw.energy.sram_access(self.hw.memory.act_kb) if names else 0.0


def packed_bytes(spec: TensorSpec) -> int:
    return math.ceil(int(np.prod(spec.shape)) * spec.bits / 8)


def signed_bits(spec: TensorSpec) -> int:
    """Bits of the operand as a signed number (an unsigned code needs one more)."""
    return spec.bits + (0 if spec.signed else 1)


def _overlapped(compute: int, transfer_bytes: float, prologue_bytes: float, hw: HardwareConfig, overlap: bool) -> int:
    bw = hw.memory.dram_bytes_per_cycle
    if overlap:
        return math.ceil(prologue_bytes / bw + max(compute, (transfer_bytes - prologue_bytes) / bw))
    return math.ceil(compute + transfer_bytes / bw)


def _dram_energy(cost: OpCost, hw: HardwareConfig) -> None:
    cost.energy_pj["dram"] = 8 * (cost.dram_read_bytes + cost.dram_write_bytes) * hw.energy.dram_pj_per_bit


# ---- GEMMs -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GemmShape:
    """``groups`` independent M x K x N products (heads); A [M, K] activations, B [N, K] weights or activations."""

    groups: int
    m: int
    k: int
    n: int
    a: TensorSpec
    b: TensorSpec
    a_log2_bits: int = 0
    a_sqrt2: bool = False               # the log codes are log-sqrt(2) codes
    a_twin_m: int = 0                   # A holds twin-uniform codes of ratio 2^m
    a_dram_bytes: int | None = None     # bytes of A as stored (a convolution reads its input, not the im2col rows)
    const_bytes: int = 0                # weights, bias and shifts read from DRAM
    ptf_nonzero: int = 0


def price_gemm(op: Op, program: Program, ctx: PriceContext, g: GemmShape) -> OpCost:
    hw, arr, mem = ctx.hw, ctx.hw.array, ctx.hw.memory
    out = ctx.out_spec(op, program)
    # a twin code's flag bit is stripped at the array edge: its magnitude is a signed operand of the code's width
    a_bits = g.a_log2_bits if g.a_log2_bits else (g.a.bits if g.a_twin_m else signed_bits(g.a))
    b_bits = signed_bits(g.b)
    mode, passes = gemm_schedule(a_bits, b_bits, g.a_log2_bits, arr.pe_modes, g.a_sqrt2, g.a_twin_m)
    rows, cols = arr.rows, arr.cols
    row_blocks, col_blocks = math.ceil(g.m / rows), math.ceil(g.n / cols)
    if arr.dataflow == "os":
        compute = g.groups * passes * row_blocks * col_blocks * gemm_tile_cycles(g.k, rows, cols, mode)
    else:  # weight-stationary: R reduction indices (2R when packed) x C outputs held, A rows streamed
        k_blocks = math.ceil(k_steps(g.k, mode) / rows)
        compute = g.groups * passes * k_blocks * col_blocks * ws_tile_cycles(g.m, rows, cols)

    # DRAM traffic and buffer fit (bytes at the operands' stored widths, packed)
    share = 2 if mem.double_buffer else 1
    a_panel = rows * g.k * g.a.bits / 8
    b_panel = cols * g.k * g.b.bits / 8
    out_tile = rows * cols * out.bits / 8
    for what, need, kb in (("A panel", a_panel, mem.a_kb), ("B panel", b_panel, mem.b_kb), ("output tile", out_tile, mem.out_kb)):
        if need > kb * 1024:
            raise CostError(f"op {op.name!r}: one {what} ({need / 1024:.1f} KB for a {rows}x{cols} array, K={g.k}) "
                            f"does not fit the {kb:g} KB buffer of hardware {hw.name!r}")
    overlap = mem.double_buffer and a_panel <= mem.a_kb * 512 and b_panel <= mem.b_kb * 512 and out_tile <= mem.out_kb * 512
    a_bytes = g.a_dram_bytes if g.a_dram_bytes is not None else math.ceil(g.m * g.k * g.a.bits / 8)
    b_bytes = math.ceil(g.n * g.k * g.b.bits / 8)
    a_dram = 0 if op.inputs[0] in ctx.resident else a_bytes
    b_dram = 0 if len(op.inputs) > 1 and op.inputs[1] in ctx.resident else b_bytes
    b_once = b_bytes <= mem.b_kb * 1024 / share
    a_once = a_bytes <= mem.a_kb * 1024 / share
    if arr.dataflow == "os":
        a_loads, b_loads = 1, (1 if b_once else row_blocks)
    else:
        a_loads, b_loads = (1 if a_once else col_blocks), 1
    b_is_const = op.params.get("weight") is not None
    reads = g.groups * (a_dram * a_loads + (0 if b_is_const else b_dram * b_loads)) + g.const_bytes * (b_loads if b_is_const else 1)
    writes = ctx.dram_write(op, program)
    prologue = min(a_panel, a_dram) + min(b_panel, b_dram if not b_is_const else b_bytes)
    cycles = _overlapped(compute, reads + writes, prologue, hw, overlap)

    act = gemm_activity(g.m, g.n, g.k, rows, cols, a_bits, b_bits, mode, g.ptf_nonzero, arr.acc_bits, out.bits,
                        requant=ctx.fused_out is not None)
    e = gemm_energy_pj(act, hw.energy, mem)
    cost = OpCost(op.name, op.kind, "array", compute_cycles=compute, cycles=cycles, dram_read_bytes=reads,
                  dram_write_bytes=writes, macs=g.groups * g.m * g.n * g.k,
                  mode=MODE_NAMES[mode] + (f"x{passes}" if passes > 1 else ""))
    for part in ("multiply", "accumulate", "requant", "sram"):
        cost.energy_pj[part] = g.groups * e[part]
    cost.energy_pj["sram"] += ctx.activation_sram_pj(op, program)
    if mode not in (MODE_LOG2, MODE_LOG_SQRT2) and passes > 1:  # each byte pass accumulates again
        cost.energy_pj["accumulate"] *= passes
    _dram_energy(cost, hw)
    return cost


def _const_bytes(op: Op, program: Program, roles: tuple[str, ...]) -> int:
    return sum(packed_bytes(program.tensors[op.params[r]]) for r in roles if r in op.params)


def price_linear(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    x = program.tensors[op.inputs[0]]
    w = program.tensors[op.params["weight"]]
    shift = program.param(op, "input_shift")
    g = GemmShape(1, int(np.prod(x.shape[:-1])), x.shape[-1], w.shape[0], x, w,
                  a_twin_m=int(op.attrs.get("a_twin_m", 0)),
                  const_bytes=_const_bytes(op, program, ("weight", "bias", "input_shift")),
                  ptf_nonzero=int((shift != 0).sum()) if shift is not None else 0)
    return price_gemm(op, program, ctx, g)


def price_conv(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    x = program.tensors[op.inputs[0]]
    w = program.tensors[op.params["weight"]]
    out = program.tensors[op.outputs[0]]
    groups = int(op.attrs.get("groups", 1))  # one GEMM per group; depthwise uses one array column per group
    g = GemmShape(groups, out.shape[1] * out.shape[2], int(np.prod(w.shape[1:])), w.shape[0] // groups, x, w,
                  a_dram_bytes=packed_bytes(x), const_bytes=_const_bytes(op, program, ("weight", "bias")))
    return price_gemm(op, program, ctx, g)


def price_matmul(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    a, b = (program.tensors[t] for t in op.inputs)
    n = b.shape[-2] if op.attrs.get("transpose_b", False) else b.shape[-1]
    g = GemmShape(int(np.prod(a.shape[:-2])), a.shape[-2], a.shape[-1], n, a, b,
                  a_log2_bits=int(op.attrs.get("a_log2_bits", 0)), a_sqrt2=bool(op.attrs.get("a_sqrt2", False)),
                  a_twin_m=int(op.attrs.get("a_twin_m", 0)))
    return price_gemm(op, program, ctx, g)


# ---- nonlinear units and the vector path ---------------------------------------------------------------------------

def _stream(op: Op, program: Program, ctx: PriceContext, unit: str, compute: int, row_bytes: float) -> OpCost:
    """A streaming op: inputs read once, output written once, overlapped with compute when double-buffered."""
    hw = ctx.hw
    if row_bytes > hw.memory.out_kb * 1024:
        raise CostError(f"op {op.name!r}: one row ({row_bytes / 1024:.1f} KB) does not fit the "
                        f"{hw.memory.out_kb:g} KB output buffer of hardware {hw.name!r}")
    reads = sum(ctx.dram_read(program, t) for t in op.inputs)
    reads += sum(packed_bytes(program.tensors[c]) for c in op.params.values())
    out = ctx.out_spec(op, program)
    writes = ctx.dram_write(op, program)
    overlap = hw.memory.double_buffer and 2 * row_bytes <= hw.memory.out_kb * 1024
    cycles = _overlapped(compute, reads + writes, min(row_bytes, reads), hw, overlap)
    cost = OpCost(op.name, op.kind, unit, compute_cycles=compute, cycles=cycles, dram_read_bytes=reads,
                  dram_write_bytes=writes)
    cost.energy_pj["requant"] = _requant_pj(ctx, int(np.prod(out.shape)))
    cost.energy_pj["sram"] = ctx.activation_sram_pj(op, program)
    _dram_energy(cost, hw)
    return cost


def _rows(spec: TensorSpec) -> tuple[int, int]:
    n = spec.shape[-1]
    return int(np.prod(spec.shape)) // n, n


def _unit_sram_pj(ctx: PriceContext, elements: int, in_bits: int, passes: int, out_bits: int) -> float:
    """The unit's row buffer: ``passes`` reads of each input element and one write of each output, 64-bit words."""
    bits = elements * (passes * in_bits + out_bits)
    return math.ceil(bits / 64) * ctx.hw.energy.sram_access(ctx.hw.memory.out_kb)


def _requant_pj(ctx: PriceContext, elements: int, acc_bits: int = 32) -> float:
    e = ctx.hw.energy
    return elements * (2 * e.add(acc_bits) + e.shift(acc_bits)) if ctx.fused_out is not None else 0.0


def price_softmax(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    """rtl/src/softmax_unit.v per element: a 16-bit compare (max), a 16-bit subtract, the shift-add log2(e) (two
    16-bit adds, two shifts), the exponent's shift and add, a 32-bit sum add; the log2 code: up to 16 shift-compares
    of 32 bits (a uniform code: one 32-bit division, 32 add-steps); a twin-uniform code: per row a 31-step division,
    per element a 16 x 32 product, two rounding adds and a compare."""
    x = program.tensors[op.inputs[0]]
    rows, n = _rows(x)
    e = ctx.hw.energy
    per = 4 * e.add(16) + 3 * e.shift(16) + e.add(32)
    per += 16 * (e.add(32) + e.shift(32)) if op.attrs.get("log2", False) else 32 * e.add(32)
    if op.attrs.get("sqrt2", False):  # the log-sqrt(2) code compares squares: a 16 x 16 product per element
        per += e.mult(16, 16)
    twin = bool(op.attrs.get("twin_m", 0))
    if twin:  # replaces the uniform division per element counted above by a per-row one
        per += e.mult(16, 32) + 3 * e.add(32) - 32 * e.add(32) + 31 * e.add(32) / n
    compute = math.ceil(rows / ctx.hw.units.softmax) * softmax_row_cycles(n, twin)
    cost = _stream(op, program, ctx, "softmax", compute, n * x.bits / 8)
    out = ctx.out_spec(op, program)
    cost.energy_pj["nonlinear"] = rows * n * per
    cost.energy_pj["sram"] += _unit_sram_pj(ctx, rows * n, x.bits, 3, out.bits)
    return cost


def price_layernorm(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    """rtl/src/layernorm_unit.v per element: a 48-bit sum add, a subtract and a 24 x 24 square with a 64-bit add,
    the 48 x 40 and x 16 output products, a 64-bit add and shift; per row two 48-step divisions (48-bit subtracts)
    and a 32-step square root (64-bit subtracts)."""
    x = program.tensors[op.inputs[0]]
    rows, c = _rows(x)
    e = ctx.hw.energy
    per = 2 * e.add(48) + e.mult(24, 24) + e.add(64) + e.mult(48, 40) + e.mult(64, 16) + e.add(64) + e.shift(64)
    per_row = 2 * 48 * e.add(48) + 32 * e.add(64)
    compute = math.ceil(rows / ctx.hw.units.layernorm) * layernorm_row_cycles(c)
    cost = _stream(op, program, ctx, "layernorm", compute, c * x.bits / 8)
    cost.energy_pj["nonlinear"] = rows * (c * per + per_row)
    cost.energy_pj["sram"] += _unit_sram_pj(ctx, rows * c, x.bits, 3, ctx.out_spec(op, program).bits)
    return cost


def price_gelu(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    """Per element (hwsim.kernels.gelu): three shift-adds for 1.702 x, the shift exponential (two adds, two shifts),
    a 24-step division (24-bit subtracts), a sign select and the 16 x 9 product; a fused requant after it."""
    x = program.tensors[op.inputs[0]]
    rows, n = _rows(x)
    e = ctx.hw.energy
    per = 3 * (e.add(16) + e.shift(16)) + 2 * (e.add(16) + e.shift(16)) + 24 * e.add(24) + e.add(9) + e.mult(16, 9)
    compute = math.ceil(rows / ctx.hw.units.gelu) * gelu_row_cycles(n)
    cost = _stream(op, program, ctx, "gelu", compute, n * x.bits / 8)
    cost.energy_pj["nonlinear"] = rows * n * per
    cost.energy_pj["sram"] += _unit_sram_pj(ctx, rows * n, x.bits, 1, ctx.out_spec(op, program).bits)
    return cost


def _vector(op: Op, program: Program, ctx: PriceContext, per_element_pj: float) -> OpCost:
    x = program.tensors[op.inputs[0]]
    elements = max(int(np.prod(program.tensors[t].shape)) for t in op.inputs)
    compute = math.ceil(elements / ctx.hw.units.vector_lanes)
    cost = _stream(op, program, ctx, "vector", compute, min(elements, ctx.hw.units.vector_lanes) * x.bits / 8)
    cost.energy_pj["vector"] = elements * per_element_pj
    return cost


def price_add(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    e = ctx.hw.energy
    bits = program.tensors[op.outputs[0]].bits
    return _vector(op, program, ctx, 2 * e.shift(bits) + e.add(bits))


def price_silu(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    """SiLU runs on the GELU unit: the same shift sigmoid without the 1.702 shift-adds (hwsim.kernels.activations).
    Element-wise on a feature map, it streams the whole map through each unit back to back (one element per cycle)
    and pays the pipeline's fill once, not once per row as GELU's token rows do."""
    x = program.tensors[op.inputs[0]]
    rows, n = _rows(x)
    e = ctx.hw.energy
    per = 2 * (e.add(16) + e.shift(16)) + 24 * e.add(24) + e.add(9) + e.mult(16, 9)
    compute = gelu_row_cycles(math.ceil(rows * n / ctx.hw.units.gelu))
    cost = _stream(op, program, ctx, "gelu", compute, n * x.bits / 8)
    cost.energy_pj["nonlinear"] = rows * n * per
    cost.energy_pj["sram"] += _unit_sram_pj(ctx, rows * n, x.bits, 1, ctx.out_spec(op, program).bits)
    return cost


def price_hardswish(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    """On the vector lanes: an add, two compares and a 16 x 16 product per element."""
    e = ctx.hw.energy
    return _vector(op, program, ctx, 3 * e.add(16) + e.mult(16, 16))


def price_relu(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    """On the vector lanes: one compare (a subtract) per element."""
    return _vector(op, program, ctx, ctx.hw.energy.add(program.tensors[op.inputs[0]].bits))


def price_mul(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    """On the vector lanes: two zero-point subtracts and one product per element."""
    a, b = (program.tensors[t] for t in op.inputs)
    e = ctx.hw.energy
    return _vector(op, program, ctx, 2 * e.add(max(a.bits, b.bits)) + e.mult(a.bits, b.bits))


def price_avgpool(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    """On the vector lanes, per output: k^2 - 1 adds of the window (the input is read k^2 times from the buffer, so
    the lanes spend k^2 cycles per output) and the reciprocal product."""
    e = ctx.hw.energy
    k = int(op.attrs["kernel"])
    out = program.tensors[op.outputs[0]]
    elements = int(np.prod(out.shape))
    x = program.tensors[op.inputs[0]]
    compute = math.ceil(elements * k * k / ctx.hw.units.vector_lanes)
    cost = _stream(op, program, ctx, "vector", compute, min(elements, ctx.hw.units.vector_lanes) * x.bits / 8)
    cost.energy_pj["vector"] = elements * ((k * k - 1) * e.add(24) + e.mult(24, 17))
    return cost


def price_reduce_sum(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    return _vector(op, program, ctx, ctx.hw.energy.add(program.tensors[op.outputs[0]].bits))


def price_requant(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    e = ctx.hw.energy
    bits = program.tensors[op.inputs[0]].bits
    per = 2 * e.add(bits) + e.shift(bits) + (e.mult(bits, 16) if op.attrs.get("mode", "shift") == "dyadic" else 0.0)
    cost = _vector(op, program, ctx, 0.0)
    cost.energy_pj["requant"] = int(np.prod(program.tensors[op.inputs[0]].shape)) * per
    return cost


def price_layout(op: Op, program: Program, ctx: PriceContext) -> OpCost:
    return OpCost(op.name, op.kind, "layout")

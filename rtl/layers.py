"""GEMM jobs for the RTL, cut from a real integer program and hwsim's trace of it (hwsim is the only reference).

Transformer blocks are found by name: every op ``<prefix>.attn.qkv`` starts one (``blocks.3`` in a ViT,
``layers.1.blocks.0`` in a Swin). For block ``i`` the six GEMM kinds are: qkv, Q.K^T (one job per head, and per window
in a Swin), attn.V (likewise, log2 or int operands), proj, fc1, fc2. Each job carries the operands, the fused bias + shift requantization of the following
Requant op, and hwsim's accumulator and requantized output for one image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwsim.cost.cycles import MODE_TWIN, gemm_mode
from hwsim.ir.schema import Op, Program
from hwsim.ops.gemm_ops import conv_geometry, eta_correction, im2col

GEMM_KINDS = ("qkv", "matmul_qk", "matmul_av", "proj", "fc1", "fc2")
SHIFT_RANGE = (-16, 47)  # what rtl/src/shift_requant.v implements


@dataclass
class GemmJob:
    name: str
    a: np.ndarray        # [M, K]
    b: np.ndarray        # [N, K]
    bias: np.ndarray     # [N]
    shift: np.ndarray    # [N]
    ptf: np.ndarray      # [K]
    mode: int
    a_bits: int
    b_bits: int
    qmin: int
    qmax: int
    acc: np.ndarray      # hwsim: [M, N] accumulator incl. bias
    out: np.ndarray      # hwsim: [M, N] requantized
    twin_m: int = 0      # A holds twin-uniform codes of ratio 2^twin_m (decoded at the array edge)
    twin_signed: bool = False  # sign codes (post-GELU), else flag codes (post-softmax)
    a_zero_point: int = 0  # the input's zero point, which ``bias`` carries as -z sum_k B[n, k] (coverage reads it)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.a.shape[0], self.a.shape[1], self.b.shape[0]


class RtlUnsupported(ValueError):
    """A program that the RTL units do not implement (dyadic requantization, uniform softmax, ...): a user error."""


def _consumer(program: Program, tensor: str) -> Op:
    for op in program.ops:
        if tensor in op.inputs:
            return op
    raise KeyError(f"no op reads {tensor!r}")


def _is_dyadic(rq: Op) -> bool:
    return rq.kind == "Requant" and rq.attrs.get("mode", "shift") == "dyadic"


def _pass_through(acc: np.ndarray, n: int) -> tuple[np.ndarray, int, int, np.ndarray]:
    """Requantizer settings that hand the accumulator on (shift 0, the 16-bit output range) and hwsim's output for
    them (hwsim.kernels.requant), for checking a layer whose real requantization the RTL lacks."""
    from hwsim.kernels.requant import requant_shift

    qmin, qmax = -(1 << 15), (1 << 15) - 1
    rows = acc.reshape(-1, n).astype(np.int64)
    out = np.empty(rows.shape, np.int64)
    requant_shift(rows, np.zeros(n, np.int64), qmin, qmax, out)
    return np.zeros(n, np.int64), qmin, qmax, out.reshape(acc.shape)


def _requant_params(program: Program, rq: Op, n: int, head: int | None) -> tuple[np.ndarray, int, int]:
    if rq.kind != "Requant" or rq.attrs.get("mode", "shift") != "shift":
        raise RtlUnsupported(f"{rq.name}: the RTL requantizer implements shift requantization only (got {rq.kind} "
                         f"{rq.attrs.get('mode')}); export with a power-of-two method such as p2vit")
    shift = program.constants[rq.params["shift"]].astype(np.int64)
    if head is not None and shift.size > 1:
        shift = np.full(n, shift[head])
    elif shift.size == 1:
        shift = np.full(n, int(shift[0]))
    if shift.min() < SHIFT_RANGE[0] or shift.max() > SHIFT_RANGE[1]:
        raise RtlUnsupported(f"{rq.name}: shifts {shift.min()}..{shift.max()} outside the RTL's {SHIFT_RANGE}")
    spec = program.tensors[rq.outputs[0]]
    if spec.zero_point:
        raise RtlUnsupported(f"{rq.name}: output zero point {spec.zero_point}; the RTL requantizer adds none")
    return shift, spec.qmin, spec.qmax


def block_prefixes(program: Program) -> list[str]:
    """Name prefixes of the program's transformer blocks in program order (``blocks.0``, ``layers.0.blocks.1``)."""
    return [op.name[: -len(".attn.qkv")] for op in program.ops if op.name.endswith(".attn.qkv")]


def block_prefix(program: Program, block: int) -> str:
    prefixes = block_prefixes(program)
    if not 0 <= block < len(prefixes):
        raise RtlUnsupported(f"block {block} out of range: the program has {len(prefixes)} transformer blocks")
    return prefixes[block]


def block_jobs(program: Program, trace: dict[str, np.ndarray], block: int, image: int = 0,
               kinds: tuple[str, ...] = GEMM_KINDS, dyadic_accumulators: bool = False) -> list[GemmJob]:
    """The GEMM jobs of transformer block ``block`` (index into ``block_prefixes``) for sample ``image``.

    The RTL requantizer shifts; a layer requantized by a dyadic multiply-shift (float-scale methods) is refused, or
    with ``dyadic_accumulators`` checked up to its accumulators (the requantizer set to pass them on)."""
    p = block_prefix(program, block)
    names = {"qkv": f"{p}.attn.qkv", "matmul_qk": f"{p}.attn.matmul_qk", "matmul_av": f"{p}.attn.matmul_av",
             "proj": f"{p}.attn.proj", "fc1": f"{p}.mlp.fc1", "fc2": f"{p}.mlp.fc2"}
    unknown = set(kinds) - set(names)
    if unknown:
        raise ValueError(f"unknown GEMM kinds {sorted(unknown)}; known: {GEMM_KINDS}")
    jobs = []
    for kind in kinds:
        op = program.op(names[kind])
        rq = _consumer(program, op.outputs[0])
        acc_all, out_all = trace[op.outputs[0]][image], trace[rq.outputs[0]][image]
        passing = dyadic_accumulators and _is_dyadic(rq)
        if op.kind == "Linear":
            w = program.constants[op.params["weight"]]
            x = trace[op.inputs[0]][image].reshape(-1, w.shape[1])
            n = w.shape[0]
            bias = program.constants[op.params["bias"]] if "bias" in op.params else np.zeros(n, np.int64)
            ptf = program.constants[op.params["input_shift"]] if "input_shift" in op.params else np.zeros(w.shape[1], np.int64)
            if passing:
                shift, qmin, qmax, out_all = _pass_through(acc_all, n)
            else:
                shift, qmin, qmax = _requant_params(program, rq, n, None)
            a_bits, b_bits = program.tensors[op.inputs[0]].bits, program.tensors[op.params["weight"]].bits
            twin_m, twin_signed = _twin_operand(program, op)
            if twin_m and np.any(ptf):
                raise RtlUnsupported(f"{op.name}: twin codes and PTF shifts share the PE's product shifter")
            jobs.append(GemmJob(names[kind], x, w, bias, shift, ptf, MODE_TWIN if twin_m else gemm_mode(a_bits, b_bits),
                                a_bits, b_bits, qmin, qmax, acc_all.reshape(x.shape[0], n),
                                out_all.reshape(x.shape[0], n), twin_m, twin_signed,
                                program.tensors[op.inputs[0]].zero_point))
            continue
        lhs, rhs = trace[op.inputs[0]][image], trace[op.inputs[1]][image]
        log2 = int(op.attrs.get("a_log2_bits", 0)) > 0
        sqrt2 = bool(op.attrs.get("a_sqrt2", False))
        eta = int(op.attrs.get("a_eta", 0))
        if log2 and int(op.attrs["a_log2_bits"]) != 4:
            raise RtlUnsupported(f"{op.name}: the PE's log modes take 4-bit codes, this MatMul reads "
                                 f"{op.attrs['a_log2_bits']}-bit ones")
        a_bits = program.tensors[op.inputs[0]].bits
        b_bits = program.tensors[op.inputs[1]].bits
        twin_m, twin_signed = _twin_operand(program, op)
        mode = MODE_TWIN if twin_m else gemm_mode(a_bits, b_bits, log2, sqrt2)
        heads = lhs.shape[-3] if lhs.ndim >= 3 else 1
        windows = lhs.reshape(-1, *lhs.shape[-2:]).shape[0] // heads   # leading axes: [windows,] heads
        lhs, rhs = lhs.reshape(-1, *lhs.shape[-2:]), rhs.reshape(-1, *rhs.shape[-2:])
        acc_all, out_all = acc_all.reshape(-1, *acc_all.shape[-2:]), out_all.reshape(-1, *out_all.shape[-2:])
        for i in range(lhs.shape[0]):
            h = i % heads
            b = rhs[i] if op.attrs.get("transpose_b", False) else rhs[i].T
            if passing:
                shift, qmin, qmax, out_i = _pass_through(acc_all[i], b.shape[0])
            else:
                (shift, qmin, qmax), out_i = _requant_params(program, rq, b.shape[0], h), out_all[i]
            name = f"{names[kind]}.head{h}" if windows == 1 else f"{names[kind]}.window{i // heads}.head{h}"
            # SULQ's -eta * sum_k V per column is the column's bias on the array (hwsim computes it from V)
            bias = -eta_correction(rhs[i], eta, int(op.attrs["a_log2_bits"]), bool(op.attrs.get("transpose_b", False)))[0] \
                if eta else np.zeros(b.shape[0], np.int64)
            jobs.append(GemmJob(name, lhs[i], np.ascontiguousarray(b), bias, shift, np.zeros(lhs.shape[-1], np.int64),
                                mode, a_bits, b_bits, qmin, qmax, acc_all[i], out_i, twin_m, twin_signed))
    return jobs


def bridge_prefix(program: Program, block: int) -> str | None:
    """The module path holding transformer block ``block`` and convolutions too (a hybrid's bridge block: MobileViT's
    local convolutions, transformer blocks and fusion), None when the block has no convolution around it (a ViT)."""
    parts = block_prefix(program, block).split(".")
    convs = [op.name for op in program.ops if op.kind == "Conv2d"]
    for k in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:k])
        if any(c.startswith(prefix + ".") for c in convs):
            return prefix
    return None


def conv_jobs(program: Program, trace: dict[str, np.ndarray], prefix: str, image: int = 0) -> list[GemmJob]:
    """The convolutions under ``prefix`` as GEMM jobs on the array: im2col rows of the traced input (the border padded
    with the input's zero point, as hwsim's Conv2d) times the weights, one job per group (a depthwise convolution is
    C one-column GEMMs: the array has no depthwise mapping, and the cost model prices it so), with the requantization
    of the op that reads the accumulator."""
    jobs = []
    for op in (o for o in program.ops if o.kind == "Conv2d" and o.name.startswith(prefix + ".")):
        w = program.constants[op.params["weight"]]
        o, cg, kh, kw = w.shape
        stride, pad, groups = conv_geometry(op)
        x = trace[op.inputs[0]][image]
        cols = im2col(x[None], kh, kw, stride, pad, program.tensors[op.inputs[0]].zero_point)[0]   # [P, C kh kw]
        rq = _consumer(program, op.outputs[0])
        acc = trace[op.outputs[0]][image].reshape(o, -1).T                                          # [P, O]
        out = trace[rq.outputs[0]][image].reshape(o, -1).T
        shift, qmin, qmax = _requant_params(program, rq, o, None)
        bias = program.constants[op.params["bias"]] if "bias" in op.params else np.zeros(o, np.int64)
        a_bits, b_bits = program.tensors[op.inputs[0]].bits, program.tensors[op.params["weight"]].bits
        og, kg = o // groups, cg * kh * kw
        for g in range(groups):
            cut = slice(g * og, (g + 1) * og)
            name = op.name if groups == 1 else f"{op.name}.group{g}"
            jobs.append(GemmJob(name, np.ascontiguousarray(cols[:, g * kg:(g + 1) * kg]),
                                np.ascontiguousarray(w[cut].reshape(og, kg)), bias[cut], shift[cut],
                                np.zeros(kg, np.int64), gemm_mode(a_bits, b_bits), a_bits, b_bits, qmin, qmax,
                                np.ascontiguousarray(acc[:, cut]), np.ascontiguousarray(out[:, cut]),
                                a_zero_point=program.tensors[op.inputs[0]].zero_point))
    return jobs


def _twin_operand(program: Program, op: Op) -> tuple[int, bool]:
    """(m, signed) of a twin-coded left operand (0, False otherwise); the array's edge decode takes codes of at most
    8 bits."""
    m = int(op.attrs.get("a_twin_m", 0))
    spec = program.tensors[op.inputs[0]]
    if m and spec.bits > 8:
        raise RtlUnsupported(f"{op.name}: {spec.bits}-bit twin codes; the array's edge decode takes at most 8 bits")
    return m, bool(m and spec.signed)


@dataclass
class SoftmaxJob:
    name: str
    x: np.ndarray        # [rows, n] integer logits
    frac_bits: int
    codes: np.ndarray    # hwsim: [rows, n] log2 (or log-sqrt(2)) codes
    sqrt2: bool = False  # log-sqrt(2) codes (RepQ-ViT)
    eta: int = 0         # SULQ's eta / 2^12 (I&S-ViT)
    twin_m: int = 0      # twin-uniform codes of ratio 2^twin_m (PTQ4ViT)
    bits: int = 4        # code width


def softmax_job(program: Program, trace: dict[str, np.ndarray], block: int, image: int = 0) -> SoftmaxJob:
    """The attention softmax of block ``block`` (all heads' rows) with hwsim's log or twin-uniform codes."""
    op = program.op(f"{block_prefix(program, block)}.attn.softmax")
    out = program.tensors[op.outputs[0]]
    twin_m = int(op.attrs.get("twin_m", 0))
    if not ((op.attrs.get("log2", False) and out.bits == 4) or (twin_m and 2 <= out.bits <= 8)):
        raise RtlUnsupported(f"{op.name}: the RTL softmax unit produces 4-bit log2 or log-sqrt(2) codes or twin-uniform "
                             f"codes of up to 8 bits; this program's softmax is "
                             f"{'log' if op.attrs.get('log2') else 'twin' if twin_m else 'uniform'} {out.bits}-bit")
    x = trace[op.inputs[0]][image]
    return SoftmaxJob(op.name, x.reshape(-1, x.shape[-1]), int(op.attrs["frac_bits"]),
                      trace[op.outputs[0]][image].reshape(-1, x.shape[-1]), bool(op.attrs.get("sqrt2", False)),
                      int(op.attrs.get("eta", 0)), twin_m, out.bits)


@dataclass
class LayerNormJob:
    name: str
    x: np.ndarray       # [rows, c]
    gamma: np.ndarray   # [c]
    beta: np.ndarray
    shift: np.ndarray
    qmin: int
    qmax: int
    out: np.ndarray     # hwsim: [rows, c]


def layernorm_job(program: Program, trace: dict[str, np.ndarray], name: str, image: int = 0) -> LayerNormJob:
    """The LayerNorm op ``name`` (e.g. blocks.0.norm1) of one traced image, with hwsim's output."""
    op = program.op(name)
    x = trace[op.inputs[0]][image]
    spec = program.tensors[op.outputs[0]]
    p = {r: program.constants[op.params[r]].astype(np.int64) for r in ("gamma", "beta", "shift")}
    return LayerNormJob(name, x.reshape(-1, x.shape[-1]), p["gamma"], p["beta"], p["shift"], spec.qmin, spec.qmax,
                        trace[op.outputs[0]][image].reshape(-1, x.shape[-1]))


@dataclass
class GeluJob:
    name: str
    x: np.ndarray       # [rows, n] integer inputs
    frac_bits: int
    sig_bits: int
    out: np.ndarray     # hwsim: [rows, n] products x * sigmoid code
    silu: bool = False  # SiLU (x * sigmoid(x)) on the same unit


def gelu_job(program: Program, trace: dict[str, np.ndarray], name: str, image: int = 0) -> GeluJob:
    """The GELU or SiLU op ``name`` (e.g. blocks.0.mlp.act) of one traced image, with hwsim's output."""
    op = program.op(name)
    if op.kind not in ("GELU", "SiLU"):
        raise RtlUnsupported(f"{name}: a {op.kind} op; the GELU unit runs GELU and SiLU")
    x = trace[op.inputs[0]][image]
    if program.tensors[op.inputs[0]].bits > 16 or program.tensors[op.outputs[0]].bits > 32:
        raise RtlUnsupported(f"{name}: the RTL GELU unit takes inputs of up to 16 bits and writes 32-bit products")
    return GeluJob(name, x.reshape(-1, x.shape[-1]), int(op.attrs["frac_bits"]), int(op.attrs.get("sig_bits", 8)),
                   trace[op.outputs[0]][image].reshape(-1, x.shape[-1]), op.kind == "SiLU")

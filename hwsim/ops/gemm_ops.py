"""Linear, Conv2d (via im2col) and head-wise MatMul ops, all on hwsim.kernels.gemm (int32 accumulation).

Linear may carry ``input_shift`` (per input channel left shifts): FQ-ViT's power-of-two factors (PTF) for
post-LayerNorm activations, applied to the operand before the multiply as P^2-ViT's shifters do.
MatMul with ``a_log2_bits = b`` takes log2 softmax codes as its left operand (hwsim.kernels.softmax): a code c is the
integer 2^(2^b - 2 - c) (0 for the zero code), i.e. attn @ V is a sum of shifted V rows; with ``a_sqrt2`` the codes
are log-sqrt(2) codes (RepQ-ViT), the integer 2^(T - ceil(c / 2)) * (128, or 181 for odd c), T = 2^(b-1) - 1; with
``a_eta`` they are SULQ codes (I&S-ViT), value 2^-c - eta with eta = a_eta / 2^12: the integer 2^(T - c), T =
max(2^b - 2, 12), and the product subtracts a_eta 2^(T - 12) sum_k V_kn from every output of column n (a bias of the
column, computed from V: the GEMM engine's bias adder applies it).
Linear and MatMul with ``a_twin_m = m`` take twin-uniform codes as their left operand (PTQ4ViT, MPTQ-ViT;
hwsim.kernels.twin): a signed code c is the integer c (c < 0) or c << m; an unsigned code with bit b-1 set is its
lower bits << m. The decoded operand must fit int16 (b + m signed bits).
"""
from __future__ import annotations

import numpy as np

from hwsim.ir.schema import Op, Program
from hwsim.kernels.gemm import PackedB, gemm, pack_b
from hwsim.kernels.softmax import ETA_FRAC_BITS
from hwsim.kernels.twin import TWIN_MAX_M, twin_decode
from hwsim.cost.pricing import price_conv, price_linear, price_matmul
from hwsim.ops._registry import need, param_shape, register_op
from hwsim.reference import ops as R


def _acc_bits(op: Op) -> int:
    return int(op.attrs.get("acc_bits", 32))


def packed_weight(program: Program, op: Op) -> PackedB:
    """The op's weight [O, ...] as GEMM panels over its flattened fan-in, packed once per program."""
    w = program.constants[op.params["weight"]]
    return program.derived(f"gemm_panels:{op.params['weight']}", lambda: pack_b(w.reshape(1, len(w), -1)))


def check_linear(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    (x,) = shapes
    w = param_shape(op, program, "weight")
    need(len(w) == 2 and x[-1] == w[1], f"weight {w} does not fit input {x} (want [N, {x[-1]}])")
    b = param_shape(op, program, "bias", required=False)
    need(b is None or b == (w[0],), f"bias shape {b}, want ({w[0]},)")
    s = param_shape(op, program, "input_shift", required=False)
    need(s is None or s == (w[1],), f"input_shift shape {s}, want ({w[1]},)")
    need(s is None or not op.attrs.get("a_twin_m", 0), "a_twin_m and input_shift do not combine")
    _check_twin(op, program)
    _check_operand_widths(op, program, [] if op.attrs.get("a_twin_m", 0) else [op.inputs[0]], op.params.get("input_shift"))
    _check_operand_widths(op, program, [op.params["weight"]])
    return [x[:-1] + (w[0],)]


def _check_twin(op: Op, program: Program) -> None:
    """A twin-coded left operand decodes to b + m signed bits, which must fit the GEMM's int16 operands."""
    m = int(op.attrs.get("a_twin_m", 0))
    if not m:
        return
    spec = program.tensors[op.inputs[0]]
    need(1 <= m <= TWIN_MAX_M, f"a_twin_m {m} outside 1..{TWIN_MAX_M}")
    need(spec.bits + m <= 16, f"twin codes of {spec.bits} bits with m = {m} decode beyond int16")
    need(spec.zero_point == 0, "twin-uniform codes carry no zero point")


def twin_operand(op: Op, program: Program, x: np.ndarray) -> np.ndarray:
    """The left operand as the GEMM multiplies it: twin codes decoded (``a_twin_m``), other codes as they are."""
    m = int(op.attrs.get("a_twin_m", 0))
    if not m:
        return x
    spec = program.tensors[op.inputs[0]]
    out = np.empty(x.shape, dtype=np.int16)
    twin_decode(np.ascontiguousarray(x), spec.bits, m, spec.signed, out)
    return out


def _check_operand_widths(op: Op, program: Program, names: list[str], shift: str | None = None) -> None:
    """GEMM operands travel as int16 (hwsim.kernels.gemm): operand bits plus any PTF shift, plus a sign bit for an
    unsigned operand, must fit in 16 signed bits."""
    extra = int(program.constants[shift].max()) if shift is not None and program.constants[shift].size else 0
    for i, name in enumerate(names):
        spec = program.tensors[name]
        bits = spec.bits + (extra if i == 0 else 0) + (0 if spec.signed else 1)
        need(bits <= 16, f"operand {name!r} needs {bits} signed bits; GEMM operands are limited to int16")


def _reference_twin(op: Op, program: Program, x: np.ndarray) -> np.ndarray:
    if not op.attrs.get("a_twin_m", 0):
        return x
    spec = program.tensors[op.inputs[0]]
    return R.twin_decode(x, spec.bits, int(op.attrs["a_twin_m"]), spec.signed)


def reference_linear(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    x = _reference_twin(op, program, args[0])
    if "input_shift" in op.params:
        x = x * (np.int64(1) << program.param(op, "input_shift"))
    acc = R.matmul(x, program.param(op, "weight"), program.param(op, "bias"))
    return R.saturate(acc, _acc_bits(op), True)[0]


@register_op("Linear", check_linear, reference_linear, price_linear)
def run_linear(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    (x,) = inputs
    w = packed_weight(program, op)
    shift = program.param(op, "input_shift")
    a = twin_operand(op, program, x).reshape(1, -1, x.shape[-1]).astype(np.int16, copy=False)
    if shift is not None:
        a = a << shift.astype(np.int16)
    out, sat = gemm(a, w, program.param(op, "bias"), _acc_bits(op))
    return [out.reshape(x.shape[:-1] + (w.n,))], sat


def conv_geometry(op: Op) -> tuple[int, int, int]:
    """(stride, padding, groups) of a Conv2d op."""
    return int(op.attrs.get("stride", 1)), int(op.attrs.get("padding", 0)), int(op.attrs.get("groups", 1))


def check_conv(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    (x,) = shapes
    w = param_shape(op, program, "weight")
    stride, pad, groups = conv_geometry(op)
    need(stride >= 1 and pad >= 0, f"conv stride {stride} / padding {pad}: want stride >= 1, padding >= 0")
    need(len(x) == 3 and len(w) == 4, f"conv weight {w} / input {x}: want [O, C / groups, kh, kw] and [C, H, W]")
    need(groups >= 1 and x[0] % groups == 0 and w[0] % groups == 0,
         f"groups {groups} must divide the input channels {x[0]} and the output channels {w[0]}")
    need(x[0] == w[1] * groups, f"conv weight {w} does not fit input {x} with {groups} groups "
                                f"(want [O, {x[0] // groups}, kh, kw])")
    _check_operand_widths(op, program, [op.inputs[0], op.params["weight"]])
    b = param_shape(op, program, "bias", required=False)
    need(b is None or b == (w[0],), f"bias shape {b}, want ({w[0]},)")
    h = (x[1] + 2 * pad - w[2]) // stride + 1
    wd = (x[2] + 2 * pad - w[3]) // stride + 1
    need(h > 0 and wd > 0, f"conv output would be empty for input {x}")
    return [(w[0], h, wd)]


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, pad: int, pad_value: int = 0) -> np.ndarray:
    """[B, C, H, W] -> [B, H'*W', C*kh*kw] patches (row-major over output positions, C-major within a patch); the
    border is padded with ``pad_value`` (the input's zero point: a real zero)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value)
    b, c, h, w = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    view = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    return view[:, :, :ho, :wo].transpose(0, 2, 3, 1, 4, 5).reshape(b, ho * wo, c * kh * kw)


def reference_conv(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    stride, pad, groups = conv_geometry(op)
    acc = R.conv2d(args[0], program.param(op, "weight"), program.param(op, "bias"), stride, pad, groups,
                   program.tensors[op.inputs[0]].zero_point)
    return R.saturate(acc, _acc_bits(op), True)[0]


def _grouped_weight(program: Program, op: Op, groups: int) -> PackedB:
    """The weight [O, C / G, kh, kw] as G GEMM right operands [G, O / G, C / G * kh * kw], packed once."""
    w = program.constants[op.params["weight"]]
    return program.derived(f"conv_panels:{op.params['weight']}:{groups}",
                           lambda: pack_b(w.reshape(groups, len(w) // groups, -1)))


@register_op("Conv2d", check_conv, reference_conv, price_conv)
def run_conv(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """A convolution as GEMMs over im2col rows, one per group (Chellapilla et al., 2006). The input's zero point pads
    the border and is the operand as stored: the lowering folds -z * sum(W) into the bias (exact with that padding).
    """
    (x,) = inputs
    o, _, kh, kw = program.constants[op.params["weight"]].shape
    stride, pad, groups = conv_geometry(op)
    cols = im2col(x, kh, kw, stride, pad, program.tensors[op.inputs[0]].zero_point)
    bsz, positions, k = cols.shape
    rows = cols.reshape(1, bsz * positions, k)
    if groups > 1:
        rows = rows.reshape(bsz * positions, groups, k // groups).transpose(1, 0, 2)
    bias = program.param(op, "bias")
    if bias is not None and groups > 1:
        bias = bias.reshape(groups, o // groups)
    out, sat = gemm(rows, _grouped_weight(program, op, groups) if groups > 1 else packed_weight(program, op), bias,
                    _acc_bits(op))
    if groups > 1:
        out = out.transpose(1, 0, 2)
    ho = (x.shape[2] + 2 * pad - kh) // stride + 1
    return [out.reshape(bsz, ho, positions // ho, o).transpose(0, 3, 1, 2).copy()], sat


def check_matmul(op: Op, program: Program, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    a, b = shapes
    need(len(a) == len(b) >= 2 and a[:-2] == b[:-2], f"batch dims of {a} and {b} differ")
    _check_operand_widths(op, program, [] if op.attrs.get("a_log2_bits", 0) or op.attrs.get("a_twin_m", 0)
                          else [op.inputs[0]])
    _check_twin(op, program)
    need(not (op.attrs.get("a_twin_m", 0) and op.attrs.get("a_log2_bits", 0)), "a_twin_m and a_log2_bits exclude each other")
    need(not op.attrs.get("a_sqrt2", False) or op.attrs.get("a_log2_bits", 0), "a_sqrt2 needs a_log2_bits")
    eta = int(op.attrs.get("a_eta", 0))
    need(eta == 0 or (op.attrs.get("a_log2_bits", 0) and not op.attrs.get("a_sqrt2", False) and 0 < eta < 1 << 16),
         "a_eta (SULQ) needs base-2 log codes and 0 < eta < 2^16")
    _check_operand_widths(op, program, [op.inputs[1]])
    if op.attrs.get("transpose_b", False):
        need(a[-1] == b[-1], f"a {a} @ b^T {b}: inner sizes differ")
        return [a[:-1] + (b[-2],)]
    need(a[-1] == b[-2], f"a {a} @ b {b}: inner sizes differ")
    return [a[:-1] + (b[-1],)]


def decode_log2(codes: np.ndarray, bits: int) -> np.ndarray:
    """Log2 softmax codes -> the integers 2^(2^b - 2 - code) (0 for the zero code 2^b - 1)."""
    top = (1 << bits) - 2
    return np.where(codes > top, 0, np.left_shift(1, np.clip(top - codes, 0, top))).astype(np.int16)


def decode_log_sqrt2(codes: np.ndarray, bits: int) -> np.ndarray:
    """Log-sqrt(2) softmax codes -> 2^(T - ceil(c / 2)) shifted 128 or (odd c) 181, T = 2^(b-1) - 1; 0 for the zero
    code: the value 2^(-c / 2) at scale 2^-(T + 7), sqrt(2) as 181/128 (hwsim.kernels.softmax)."""
    t = (1 << (bits - 1)) - 1
    c = codes.astype(np.int32)
    mant = np.where(c & 1, 181, 128).astype(np.int32)
    return np.where(c >= (1 << bits) - 1, 0, mant << np.clip(t - ((c + 1) >> 1), 0, t)).astype(np.int16)


def sulq_top(bits: int) -> int:
    """The decode exponent T of SULQ codes: max(2^b - 2, ETA_FRAC_BITS), so eta 2^T is an integer."""
    return max((1 << bits) - 2, ETA_FRAC_BITS)


def decode_sulq(codes: np.ndarray, bits: int) -> np.ndarray:
    """SULQ codes -> 2^(T - c) (0 for the top code), T = sulq_top(bits); eta is subtracted after the product."""
    t = sulq_top(bits)
    c = codes.astype(np.int32)
    return np.where(c >= (1 << bits) - 1, 0, np.left_shift(1, np.clip(t - c, 0, t))).astype(np.int16)


def eta_correction(v: np.ndarray, eta: int, bits: int, transpose_b: bool) -> np.ndarray:
    """eta 2^(T - 12) sum_k V_kn per output column n of attn @ V: [..., 1, N] int64."""
    col = v.astype(np.int64).sum(-1 if transpose_b else -2)[..., None, :]
    return col * (np.int64(eta) << (sulq_top(bits) - ETA_FRAC_BITS))


def log_decode(codes: np.ndarray, bits: int, sqrt2: bool, sulq: bool = False) -> np.ndarray:
    """The integers b-bit log codes (base 2, sqrt(2), or SULQ's base 2 with a higher top) stand for as a MatMul's
    left operand."""
    if sulq:
        return decode_sulq(codes, bits)
    return decode_log_sqrt2(codes, bits) if sqrt2 else decode_log2(codes, bits)


def log_decode_exp(bits: int, sqrt2: bool, sulq: bool = False) -> int:
    """log2 of the scale of ``log_decode``'s integers: 2^-(2^b - 2) for base 2, 2^-(T + 7) for base sqrt(2), 2^-T
    for SULQ codes."""
    if sulq:
        return -sulq_top(bits)
    return -((1 << (bits - 1)) - 1 + 7) if sqrt2 else -((1 << bits) - 2)


def reference_matmul(op: Op, program: Program, args: list[np.ndarray]) -> np.ndarray:
    lhs, rhs = _reference_twin(op, program, args[0]), args[1]
    rhs = rhs if op.attrs.get("transpose_b", False) else np.swapaxes(rhs, -1, -2)
    if op.attrs.get("a_eta", 0):
        return R.saturate(R.sulq_matmul(lhs, rhs, int(op.attrs["a_log2_bits"]), int(op.attrs["a_eta"])),
                          _acc_bits(op), True)[0]
    if op.attrs.get("a_log2_bits", 0):
        bits = int(op.attrs["a_log2_bits"])
        lhs = R.log_sqrt2_decode(lhs, bits) if op.attrs.get("a_sqrt2", False) else R.log2_decode(lhs, bits)
    return R.saturate(R.matmul(lhs, rhs), _acc_bits(op), True)[0]


@register_op("MatMul", check_matmul, reference_matmul, price_matmul)
def run_matmul(op: Op, program: Program, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    a, b = inputs
    eta = int(op.attrs.get("a_eta", 0))
    if int(op.attrs.get("a_log2_bits", 0)):
        a = log_decode(a, int(op.attrs["a_log2_bits"]), bool(op.attrs.get("a_sqrt2", False)), eta > 0)
    a = twin_operand(op, program, a)
    # Q.K^T: K [.., N, K] is already the [N, K] operand; attn @ V: V [.., K, N] is packed from its K-major layout.
    panels = pack_b(b.reshape((-1,) + b.shape[-2:]), k_major=not op.attrs.get("transpose_b", False))
    lead = a.shape[:-2]
    out, sat = gemm(a.reshape((-1,) + a.shape[-2:]), panels, None, _acc_bits(op))
    out = out.reshape(lead + out.shape[-2:])
    if eta:  # SULQ: every value carries -eta, i.e. -eta * sum_k V per column, added like a bias
        lo, hi = -(1 << (_acc_bits(op) - 1)), (1 << (_acc_bits(op) - 1)) - 1
        wide = out.astype(np.int64) - eta_correction(b, eta, int(op.attrs["a_log2_bits"]),
                                                     bool(op.attrs.get("transpose_b", False)))
        sat += int(((wide < lo) | (wide > hi)).sum())
        out = np.clip(wide, lo, hi).astype(out.dtype)
    return [out], sat

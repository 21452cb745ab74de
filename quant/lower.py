"""Lowering: a quantized graph (quant.sites.QuantGraph) to an integer program (hwsim.ir.Program).

One emitter per node kind (``EMITTERS``, filled by ``@emitter``), each a small function reading the values of its
inputs and adding ops through quant.export.ProgramBuilder. The fake-quant model and this lowering read the same graph
and the same site formats: nothing is written twice.

A value during lowering is a ``Val``: a program tensor with its coding (bits, sign, zero point, and the real scale of
every element as an array broadcastable to the per-sample shape), a raw accumulator awaiting requantization (GEMM,
GELU and sum outputs), a float constant, or the not-yet-quantized image. A GEMM whose output reaches its sites through
layout ops (qkv -> reshape -> permute -> unbind -> q, k, v) is requantized right after the GEMM, per output channel:
the channel -> site map is found by running the layout ops on an array of element indices (``_target_scale``).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx

from hwsim.ir import Program
from hwsim.ops.gemm_ops import log_decode_exp
from quant.export import ProgramBuilder
from quant.fakequant import SIG_BITS, ActQuant, AlignQuant, QuantLayerNorm, layernorm_int_params
from quant.parts import QuantError, qrange
from quant.scales import Requant, Scale
from quant.sites import QuantGraph

ACC_BITS = 32


@dataclass
class Val:
    name: str | None = None
    scale: np.ndarray | None = None     # real scale per element, broadcastable to the per-sample shape
    bits: int = 0
    signed: bool = True
    zero_point: int = 0
    acc: bool = False                   # a raw accumulator: must be requantized before use
    log2: bool = False
    sqrt2: bool = False                 # log codes of base sqrt(2)
    eta: int = 0                        # SULQ log codes of p + eta / 2^12
    twin_m: int = 0                     # twin-uniform codes (hwsim.kernels.twin); scale = the fine step
    const: torch.Tensor | None = None   # a float constant (per sample)
    image: bool = False
    parts: list["Val"] | None = None    # the items of an unbind
    channel_axis: int | None = None     # where an accumulator's scale varies (per-sample axis)


class Lowering:
    def __init__(self, qg: QuantGraph, name: str) -> None:
        self.qg = qg
        self.b = ProgramBuilder(name)
        self.vals: dict[fx.Node, Val] = {}
        self.producer: dict[str, Any] = {}

    # --- helpers ---------------------------------------------------------------------------------------------------
    def module(self, node: fx.Node) -> torch.nn.Module:
        return self.qg.gm.get_submodule(node.target)

    @staticmethod
    def shape(node: fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["per_sample"])

    def site_scale(self, site: ActQuant, shape: tuple[int, ...]) -> np.ndarray:
        s = site.scale.detach().double().numpy()
        if s.size == 1 or site.axis is None:
            return np.full(shape, float(s.reshape(-1)[0]))
        view = [1] * len(shape)
        view[site.axis] = -1
        return np.broadcast_to(s.reshape(view), shape).copy()

    def op(self, kind: str, name: str, inputs: list[str], bits: int, signed: bool = True, scale: np.ndarray | None = None,
           params: dict[str, str] | None = None, attrs: dict[str, Any] | None = None, zero_point: int = 0) -> str:
        out = self.b.op(kind, name, inputs, f"{name}.out", bits, signed, _to_scale(scale), params, attrs, zero_point)
        self.producer[out] = self.b.program.ops[-1]
        return out

    def unique(self, name: str) -> str:
        base, i = name, 1
        while any(o.name == name for o in self.b.program.ops) or name in self.b.program.tensors:
            name, i = f"{base}_{i}", i + 1
        return name

    def requant(self, name: str, v: Val, dst: np.ndarray, bits: int, signed: bool, zero_point: int,
                twin_m: int = 0) -> Val:
        """Requantize ``v`` (accumulator or code) to ``dst`` scales; scales may vary along one axis only; with
        ``twin_m`` into sign-region twin codes whose fine step is ``dst``."""
        shape = self.b.program.tensors[v.name].shape
        ratio = np.broadcast_to(v.scale, shape) / np.broadcast_to(dst, shape)
        vec, axis = _per_axis(ratio)
        rq = Requant.between(Scale(torch.from_numpy(np.ones_like(vec)), -1 if axis is None else axis),
                             Scale(torch.from_numpy(1.0 / vec), -1 if axis is None else axis), bits, signed, zero_point)
        params = {"shift": self.b.constant(f"{name}.shift", rq.shift, 8)}
        if rq.mode == "dyadic":
            params["multiplier"] = self.b.constant(f"{name}.multiplier", rq.multiplier, 32)
        attrs = {"mode": rq.mode, "axis": -1 if axis is None else axis}
        if twin_m:
            attrs["twin_m"] = twin_m
        out = self.op("Requant", name, [v.name], bits, signed, dst, params, attrs, zero_point)
        return Val(out, np.broadcast_to(dst, shape).copy(), bits, signed, zero_point, twin_m=twin_m)

    def quantize_const(self, name: str, value: torch.Tensor, scale: np.ndarray, bits: int, signed: bool,
                       zero_point: int = 0) -> Val:
        lo, hi = qrange(bits, signed)
        codes = np.clip(np.floor(value.double().numpy() / scale + 0.5) + zero_point, lo, hi)
        const = self.b.constant(self.unique(name), codes, bits, signed, scale=_to_scale(np.broadcast_to(scale, codes.shape)))
        return Val(const, np.broadcast_to(scale, codes.shape).copy(), bits, signed, zero_point)

    # --- the frontier: requantization targets seen through layout ops ----------------------------------------------
    def target_scale(self, node: fx.Node) -> tuple[np.ndarray, ActQuant]:
        """Per-element target scale of ``node``'s output from the sites it reaches through layout ops, and the
        widest of those sites (whose format the stored tensor takes)."""
        shape = self.shape(node)
        n = int(np.prod(shape))
        index = torch.arange(n, dtype=torch.float64).reshape(shape)
        start = _to_batch1(index, node)
        values: dict[fx.Node, Any] = {node: start}
        target = np.full(n, np.nan)
        sites: list[ActQuant] = []
        for u in _topo_after(node):
            if not any(a in values for a in u.all_input_nodes):
                continue
            kind = u.meta.get("kind")
            if kind in ("site", "align"):
                m = self.module(u)
                site = m.leader[0] if isinstance(m, AlignQuant) else m
                sites.append(site)
                idx = _from_batch1(values[[a for a in u.all_input_nodes if a in values][0]], u).numpy().reshape(-1)
                sc = self.site_scale(site, self.shape(u)).reshape(-1)
                ok = ~np.isnan(idx)
                target[idx[ok].astype(np.int64)] = sc[ok]
            elif kind in ("layout", "scale"):
                values[u] = _evaluate(u, values)
        if np.isnan(target).any() or not sites:
            raise QuantError(f"{node.meta['path']}: part of its output reaches no quantization site")
        # The stored tensor takes the widest of its sites' formats; each narrower site then converts its view
        # (a clamp: its elements already carry that site's scale). Taking any other site's width would clip the
        # wider site's codes to the narrower range at the wider site's scale.
        return target.reshape(shape), max(sites, key=lambda s: s.bits)

    def current_value(self, node: fx.Node, memo: dict[fx.Node, Any]) -> Any:
        """A constant node's value from the graph's current attributes (a class token or position embedding that
        training changed), recomputed through the constant ops after it; shape arithmetic keeps its traced value."""
        if node in memo:
            return memo[node]
        if node.meta.get("kind") == "meta" or node.op == "placeholder":
            value = node.meta["value1"]
        elif node.op == "get_attr":
            value = self.qg.gm
            for part in node.target.split("."):
                value = getattr(value, part)
        else:
            args = fx.node.map_arg(node.args, lambda n: self.current_value(n, memo))
            kwargs = fx.node.map_arg(node.kwargs, lambda n: self.current_value(n, memo))
            if node.op == "call_function":
                value = node.target(*args, **kwargs)
            elif node.op == "call_method":
                value = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:
                value = self.qg.gm.get_submodule(node.target)(*args, **kwargs)
        memo[node] = value
        return value

    # --- run -------------------------------------------------------------------------------------------------------
    def run(self, metadata: dict[str, Any]) -> Program:
        outputs = []
        for node in self.qg.gm.graph.nodes:
            kind = node.meta.get("kind")
            if node.op == "output":
                outputs.append(self.vals[node.args[0]].name)
                continue
            if kind == "meta" or (kind is None and node.op == "get_attr"):
                continue
            if node.meta.get("const") or kind == "const":
                self.vals[node] = Val(const=_per_sample(node, self.current_value(node, {})))
                continue
            if kind not in EMITTERS:
                raise QuantError(f"op {kind!r} at node {node.meta.get('path')} has no integer lowering")
            self.vals[node] = EMITTERS[kind](self, node)
        return self.b.build(outputs, metadata)


EMITTERS: dict[str, Callable[[Lowering, fx.Node], Val]] = {}


def emitter(kind: str) -> Callable:
    def wrap(fn: Callable[[Lowering, fx.Node], Val]) -> Callable[[Lowering, fx.Node], Val]:
        EMITTERS[kind] = fn
        return fn
    return wrap


# --- scale arrays ---------------------------------------------------------------------------------------------------
def _per_axis(arr: np.ndarray) -> tuple[np.ndarray, int | None]:
    """A scale array that varies along at most one axis, as (vector, axis); per tensor: (scalar vector, None)."""
    arr = np.asarray(arr, np.float64)
    flat = arr.reshape(-1)
    if flat.size == 0 or np.all(flat == flat[0]):
        return flat[:1].copy(), None
    varying = [ax for ax in range(arr.ndim) if not np.all(arr == arr.take([0], axis=ax))]
    if len(varying) != 1:
        raise QuantError(f"a scale varies along axes {varying}; the integer program allows one channel axis")
    ax = varying[0]
    index = [0] * arr.ndim
    index[ax] = slice(None)
    return arr[tuple(index)].copy(), ax


def _to_scale(arr: np.ndarray | None) -> Scale | None:
    """The scale metadata of a program tensor; None for an intermediate layout tensor whose scale varies along
    several axes (the split of qkv into q, k, v per head), which no arithmetic op reads."""
    if arr is None:
        return None
    try:
        vec, axis = _per_axis(arr)
    except QuantError:
        return None
    return Scale(torch.from_numpy(vec.reshape(()) if axis is None else vec), -1 if axis is None else axis)


def _same(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> bool:
    return bool(np.array_equal(np.broadcast_to(a, shape), np.broadcast_to(b, shape)))


# --- batch-1 evaluation of layout ops on per-sample arrays -----------------------------------------------------------
def _batch_share(node: fx.Node) -> int:
    v = node.meta["value1"]
    return 1 if tuple(v.shape) != tuple(node.meta["per_sample"]) else 0


def _to_batch1(x: torch.Tensor, node: fx.Node) -> torch.Tensor:
    bdim = node.meta.get("bdim")
    if bdim is None or tuple(node.meta["value1"].shape) == tuple(x.shape):
        return x
    return x.unsqueeze(bdim)


def _from_batch1(x: torch.Tensor, node: fx.Node) -> torch.Tensor:
    bdim = node.meta.get("bdim")
    if bdim is None or tuple(x.shape) == tuple(node.meta["per_sample"]):
        return x
    return x.squeeze(bdim)


def _evaluate(node: fx.Node, values: dict[fx.Node, Any]) -> Any:
    """Run a layout node's own torch op on batch-1 values; inputs outside ``values`` are NaN (or their recorded
    value when they are not tensors)."""
    def arg(a: Any) -> Any:
        if isinstance(a, fx.Node):
            if a in values:
                return values[a]
            v = a.meta.get("value1")
            return torch.full_like(v, float("nan"), dtype=torch.float64) if isinstance(v, torch.Tensor) else v
        if isinstance(a, (list, tuple)):
            return type(a)(arg(x) for x in a)
        return a

    args, kwargs = arg(node.args), {k: arg(v) for k, v in node.kwargs.items()}
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "call_module":
        return args[0]
    return node.target(*args, **kwargs)


def _topo_after(node: fx.Node) -> list[fx.Node]:
    out, n = [], node.next
    while n.op != "output":
        out.append(n)
        n = n.next
    return out


def _per_sample(node: fx.Node, value: torch.Tensor) -> torch.Tensor:
    v = value.detach().double()
    if node.meta.get("bdim") is not None and tuple(v.shape) != tuple(node.meta["per_sample"]):
        v = v.squeeze(node.meta["bdim"])
    return v


def _sample_axis(node: fx.Node, axis: int) -> int:
    """An fx axis of ``node``'s value as an axis of its per-sample tensor."""
    nd = node.meta["value1"].dim()
    axis = axis % nd
    bdim = node.meta.get("bdim")
    if bdim is None or not _batch_share(node):
        return axis
    if axis == bdim:
        raise QuantError(f"{node.meta['path']}: an op along the batch axis cannot be lowered")
    return axis - (1 if axis > bdim else 0)


# --- emitters --------------------------------------------------------------------------------------------------------
@emitter("input")
def _input(lw: Lowering, node: fx.Node) -> Val:
    return Val(image=True)


@emitter("site")
def _site(lw: Lowering, node: fx.Node) -> Val:
    site: ActQuant = lw.module(node)
    v = lw.vals[node.args[0]]
    shape = lw.shape(node)
    if site.log2:
        if not v.log2:
            raise QuantError(f"{site.name}: log2 codes come only from a softmax")
        return v
    if site.twin_m and site.role == "softmax":
        if v.twin_m != site.twin_m:
            raise QuantError(f"{site.name}: twin-uniform probabilities come only from a softmax with the same ratio")
        return v
    scale = lw.site_scale(site, shape)
    if site.twin_m:
        if not v.acc or site.zero_point or not site.signed:
            raise QuantError(f"{site.name}: twin-uniform codes are requantized from an accumulator, signed, "
                             f"without a zero point")
        return lw.requant(lw.unique(f"{site.name}.requant"), v, scale, site.bits, True, 0, site.twin_m)
    if v.image:
        name = lw.b.input("input", shape, site.bits, site.signed, _to_scale(scale))
        return Val(name, scale, site.bits, site.signed, site.zero_point)
    if v.const is not None:
        return lw.quantize_const(site.name, v.const, scale, site.bits, site.signed, site.zero_point)
    if not v.acc and v.bits == site.bits and v.signed == site.signed and v.zero_point == site.zero_point \
            and _same(v.scale, scale, shape):
        return v
    return lw.requant(lw.unique(f"{site.name}.requant" if v.acc else site.name), v, scale, site.bits, site.signed,
                      site.zero_point)


@emitter("align")
def _align(lw: Lowering, node: fx.Node) -> Val:
    lead: ActQuant = lw.module(node).leader[0]
    v = lw.vals[node.args[0]]
    shape = lw.shape(node)
    scale = lw.site_scale(lead, shape)
    if v.const is not None:
        const, rank = v.const, len(lw.shape(next(iter(node.users))))
        while const.dim() > rank and const.shape[0] == 1:  # [1, N, C] beside per-sample [N, C]
            const = const[0]
        return lw.quantize_const(lw.module(node).name, const, scale.reshape(const.shape), lead.bits, lead.signed)
    if v.acc:
        return lw.requant(lw.unique(f"{lw.module(node).name}.requant"), v, scale, lead.bits, lead.signed, 0)
    return v  # a code: the Add aligns it with a shift


def _gemm_output(lw: Lowering, node: fx.Node, acc: Val) -> Val:
    """Requantize a GEMM accumulator now when its sites lie behind layout ops (else the site requantizes it). A
    concatenation requantizes its accumulator items itself: MobileViT's block input goes to a convolution's site and,
    through a concatenation, to another site of a different scale, and one stored tensor would round twice."""
    if all(u.meta.get("kind") in ("site", "align", "relu") or _is_cat(u) for u in node.users):
        return acc
    target, site = lw.target_scale(node)
    return lw.requant(f"{node.meta['path']}.requant", acc, target, site.bits, site.signed, site.zero_point)


@emitter("linear")
def _linear(lw: Lowering, node: fx.Node) -> Val:
    q = lw.module(node)
    x = lw.vals[node.args[0]]
    name = node.meta["path"]
    shape_in = lw.b.program.tensors[x.name].shape
    in_vec, in_axis = _per_axis(np.broadcast_to(x.scale, shape_in))
    base = float(in_vec.min())
    w_scale = q.wq.scale.detach().double()
    codes = q.wq.codes(q.weight.detach().double())
    params = {"weight": lw.b.constant(f"{name}.weight", codes, q.wq.bits, scale=Scale(w_scale, 0))}
    acc_scale = base * w_scale.numpy()
    if in_axis is not None:
        shifts = np.round(np.log2(in_vec / base)).astype(np.int64)
        if not np.array_equal(base * np.exp2(shifts), in_vec) or in_axis != len(shape_in) - 1:
            raise QuantError(f"{name}: per-channel input scales must be powers of two apart along the last axis")
        params["input_shift"] = lw.b.constant(f"{name}.input_shift", shifts, 8)
    else:
        shifts = np.zeros(shape_in[-1], dtype=np.int64)
    if q.bias is not None or x.zero_point:
        lo, hi = qrange(ACC_BITS, True)
        bias = np.floor(q.bias.detach().double().numpy() / acc_scale + 0.5) if q.bias is not None else 0.0
        # input codes carry the zero point z: sum_k ((x_k - z) << s_k) W[n, k] leaves -z sum_k (W[n, k] << s_k)
        bias = np.clip(bias - x.zero_point * (codes.numpy() * np.exp2(shifts)).sum(1), lo, hi)
        params["bias"] = lw.b.constant(f"{name}.bias", bias, ACC_BITS, scale=Scale(torch.from_numpy(acc_scale), -1))
    attrs: dict[str, Any] = {"acc_bits": ACC_BITS}
    if x.twin_m:
        attrs["a_twin_m"] = x.twin_m
    out = lw.op("Linear", name, [x.name], ACC_BITS, True, acc_scale, params, attrs)
    return _gemm_output(lw, node, Val(out, acc_scale.copy(), ACC_BITS, True, acc=True))


@emitter("conv2d")
def _conv(lw: Lowering, node: fx.Node) -> Val:
    """A convolution (any groups). An input zero point z pads the border (hwsim's Conv2d) and leaves
    -z * sum(W[o]) in output channel o's bias, as for a Linear. A depthwise convolution may take one input scale per
    channel (Q-HyViT's channel-wise activations): each output channel reads one, so its accumulator has one scale."""
    q = lw.module(node)
    x = lw.vals[node.args[0]]
    name = node.meta["path"]
    if x.scale is None or x.acc:
        raise QuantError(f"{name}: a convolution takes input codes")
    in_vec, in_axis = _per_axis(np.broadcast_to(x.scale, lw.b.program.tensors[x.name].shape))
    w_scale = q.wq.scale.detach().double()
    codes = q.wq.codes(q.weight.detach().double())
    if in_axis is None:
        acc_scale = float(in_vec[0]) * w_scale.numpy()
    elif in_axis == 0 and q.groups == len(in_vec) > 1:  # one scale per group: output channel o reads group o // m
        acc_scale = np.repeat(in_vec, len(codes) // q.groups) * w_scale.numpy()
    else:
        raise QuantError(f"{name}: per-channel input scales need a grouped convolution with one channel per group")
    params = {"weight": lw.b.constant(f"{name}.weight", codes, q.wq.bits, scale=Scale(w_scale, 0))}
    if q.bias is not None or x.zero_point:
        lo, hi = qrange(ACC_BITS, True)
        bias = np.floor(q.bias.detach().double().numpy() / acc_scale + 0.5) if q.bias is not None else 0.0
        bias = np.clip(bias - x.zero_point * codes.reshape(len(codes), -1).sum(1).numpy(), lo, hi)
        params["bias"] = lw.b.constant(f"{name}.bias", bias, ACC_BITS)
    scale = acc_scale.reshape(-1, 1, 1)
    attrs = {"stride": q.stride, "padding": q.padding, "acc_bits": ACC_BITS}
    if q.groups != 1:
        attrs["groups"] = q.groups
    out = lw.op("Conv2d", name, [x.name], ACC_BITS, True, scale, params, attrs)
    return _gemm_output(lw, node, Val(out, scale.copy(), ACC_BITS, True, acc=True))


@emitter("matmul")
def _matmul(lw: Lowering, node: fx.Node) -> Val:
    a, b = lw.vals[node.args[0]], lw.vals[node.args[1]]
    name = node.meta["path"]
    attrs: dict[str, Any] = {"transpose_b": False, "acc_bits": ACC_BITS}
    b_name = b.name
    prod = lw.producer.get(b.name)
    nd = len(lw.b.program.tensors[b.name].shape)
    b_scale = b.scale
    if prod is not None and prod.kind == "Permute" and list(prod.attrs["perm"]) == list(range(nd - 2)) + [nd - 1, nd - 2]:
        b_name, attrs["transpose_b"] = prod.inputs[0], True  # fold K^T into the MatMul (the Permute dies)
    shape_out = lw.shape(node)
    if a.log2:
        attrs["a_log2_bits"] = a.bits
        if a.sqrt2:
            attrs["a_sqrt2"] = True
        if a.eta:
            attrs["a_eta"] = a.eta
        a_head = np.full(shape_out[:-2] + (1, 1), 2.0 ** log_decode_exp(a.bits, a.sqrt2, a.eta > 0))
    else:
        if a.twin_m:
            attrs["a_twin_m"] = a.twin_m
        a_head = np.broadcast_to(a.scale, lw.b.program.tensors[a.name].shape)[..., :1, :1]
    b_head = np.broadcast_to(b_scale, lw.b.program.tensors[b.name].shape)[..., :1, :1]
    acc_scale = np.broadcast_to(a_head * b_head, shape_out).copy()
    if not _same(np.broadcast_to(a.scale, lw.b.program.tensors[a.name].shape), a_head, lw.b.program.tensors[a.name].shape) \
            and not a.log2:
        raise QuantError(f"{name}: MatMul operands take one scale per head")
    out = lw.op("MatMul", name, [a.name, b_name], ACC_BITS, True, acc_scale, attrs=attrs)
    return _gemm_output(lw, node, Val(out, acc_scale, ACC_BITS, True, acc=True))


def _pot_exp(v: Val, what: str) -> int:
    vec, axis = _per_axis(v.scale)
    e = np.log2(vec[0])
    if axis is not None or e != np.round(e):
        raise QuantError(f"{what}: needs a per-tensor power-of-two input scale")
    return int(e)


@emitter("softmax")
def _softmax(lw: Lowering, node: fx.Node) -> Val:
    m = lw.module(node)
    x = lw.vals[node.args[0]]
    frac = -_pot_exp(x, m.name)
    site = m.out_site[0]
    shape = lw.shape(node)
    scale = np.full(shape, 2.0 ** log_decode_exp(site.bits, site.sqrt2, site.eta > 0)) if site.log2 \
        else lw.site_scale(site, shape)
    attrs = {"frac_bits": frac, "log2": site.log2}
    if site.sqrt2:
        attrs["sqrt2"] = True
    if site.eta:
        attrs["eta"] = int(site.eta)
    if site.twin_m:
        if float(site.scale) != 2.0 ** -(site.bits - 1 + site.twin_m):
            raise QuantError(f"{m.name}: twin-uniform softmax codes take the fine step 2^-(b - 1 + m)")
        attrs["twin_m"] = int(site.twin_m)
    out = lw.op("Softmax", m.name, [x.name], site.bits, False, scale, attrs=attrs)
    return Val(out, scale, site.bits, False, log2=site.log2, sqrt2=site.sqrt2, eta=int(site.eta),
               twin_m=int(site.twin_m))



@emitter("gelu")
def _gelu(lw: Lowering, node: fx.Node) -> Val:
    m = lw.module(node)
    x = lw.vals[node.args[0]]
    frac = -_pot_exp(x, m.name)
    scale = np.full(lw.shape(node), 2.0 ** -(frac + SIG_BITS))
    out = lw.op("GELU", m.name, [x.name], ACC_BITS, True, scale, attrs={"frac_bits": frac, "sig_bits": SIG_BITS})
    return Val(out, scale, ACC_BITS, True, acc=True)


@emitter("layernorm")
def _layernorm(lw: Lowering, node: fx.Node) -> Val:
    m: QuantLayerNorm = lw.module(node)
    x = lw.vals[node.args[0]]
    site = m.out_site[0]
    p = layernorm_int_params(m.weight, m.bias, site.scale, zero_point=site.zero_point)
    params = {"gamma": lw.b.constant(f"{m.name}.gamma", p["gamma"], 16), "beta": lw.b.constant(f"{m.name}.beta", p["beta"]),
              "shift": lw.b.constant(f"{m.name}.shift", p["shift"], 8)}
    scale = lw.site_scale(site, lw.shape(node))
    out = lw.op("LayerNorm", m.name, [x.name], site.bits, site.signed, scale, params, zero_point=site.zero_point)
    return Val(out, scale, site.bits, site.signed, site.zero_point)


@emitter("sub")
@emitter("add")
def _add(lw: Lowering, node: fx.Node) -> Val:
    """An aligned Add (a Sub: the second operand subtracted) onto the grid of the site after it."""
    (site_node,) = [u for u in node.users]
    site: ActQuant = lw.module(site_node)
    shape = lw.shape(node)
    out_exp = int(site.exps())
    names, shifts = [], []
    for a in node.args:
        v = lw.vals[a]
        names.append(v.name)
        shifts.append(out_exp - _pot_exp(v, node.meta["path"]))
    scale = np.full(shape, 2.0 ** out_exp)
    attrs: dict[str, Any] = {"shift_a": shifts[0], "shift_b": shifts[1]}
    if node.meta["kind"] == "sub":
        attrs["subtract"] = True
    out = lw.op("Add", node.meta["path"], names, site.bits, True, scale, attrs=attrs)
    return Val(out, scale, site.bits, True)


@emitter("scale")
def _scale(lw: Lowering, node: fx.Node) -> Val:
    v = lw.vals[[a for a in node.args if isinstance(a, fx.Node)][0]]
    factor = float([a for a in node.args if not isinstance(a, fx.Node)][0])
    divides = node.target in (operator.truediv, torch.div) or node.target == "div"
    return replace(v, scale=v.scale / factor if divides else v.scale * factor)


@emitter("sum")
@emitter("mean")
def _reduce(lw: Lowering, node: fx.Node) -> Val:
    """A sum over per-sample axes (ReduceSum); a mean's 1/N stays in the accumulator's scale."""
    v = lw.vals[node.args[0]]
    src = node.args[0]
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if dims is None or node.kwargs.get("keepdim", False):
        raise QuantError(f"{node.meta['path']}: only a reduction over given axes without keepdim can be lowered")
    dims = dims if isinstance(dims, (tuple, list)) else [dims]
    axes = sorted(_sample_axis(src, int(d)) for d in dims)
    shape_in = lw.shape(src)
    vec, axis = _per_axis(np.broadcast_to(v.scale, shape_in))
    if axis in axes or v.zero_point or v.acc:
        raise QuantError(f"{node.meta['path']}: reduces over a scale axis, a zero point or an accumulator")
    count = int(np.prod([shape_in[a] for a in axes])) if node.meta["kind"] == "mean" else 1
    scale = np.broadcast_to(v.scale, shape_in)
    for a in reversed(axes):
        scale = scale.take(0, axis=a)
    scale = np.broadcast_to(scale / count, lw.shape(node)).copy()
    out = lw.op("ReduceSum", node.meta["path"], [v.name], ACC_BITS, True, scale, attrs={"axes": axes})
    return Val(out, scale, ACC_BITS, True, acc=True)


@emitter("layout")
def _layout(lw: Lowering, node: fx.Node) -> Val:
    srcs = [a for a in node.all_input_nodes if a in lw.vals]
    label = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    name = lw.unique(node.meta["path"])
    if label == "getitem" and lw.vals[srcs[0]].parts is not None:
        return lw.vals[srcs[0]].parts[int(node.args[1])]
    if label == "unbind":
        return _unbind(lw, node, name)
    if label in ("split", "chunk"):
        return _split(lw, node, name, label)
    if label == "cat":
        return _cat(lw, node, name)
    (src,) = srcs
    v = lw.vals[src]
    if v.acc:
        raise QuantError(f"{node.meta['path']}: a layout op on an accumulator that no site requantizes")
    shape_in, shape_out = lw.shape(src), lw.shape(node)
    scale = _from_batch1(_evaluate(node, {src: _to_batch1(torch.from_numpy(
        np.broadcast_to(v.scale, shape_in).copy()), src)}), node).numpy()
    if label in ("permute", "transpose"):
        perm = _sample_perm(node, src)
        if perm == list(range(len(perm))):
            return replace(v, scale=scale)
        out = lw.op("Permute", name, [v.name], v.bits, v.signed, scale, attrs={"perm": perm}, zero_point=v.zero_point)
        return replace(v, name=out, scale=scale)
    if label == "roll":
        shifts = node.kwargs.get("shifts", node.args[1] if len(node.args) > 1 else None)
        dims = node.kwargs.get("dims", node.args[2] if len(node.args) > 2 else None)
        shifts, dims = (list(shifts), list(dims)) if isinstance(shifts, (tuple, list)) else ([shifts], [dims])
        out = lw.op("Roll", name, [v.name], v.bits, v.signed, scale, zero_point=v.zero_point,
                    attrs={"shifts": [int(s) for s in shifts], "axes": [_sample_axis(src, d) for d in dims]})
        return replace(v, name=out, scale=scale)
    if label == "getitem":
        return _index(lw, node, src, v, name, scale)
    if shape_in != shape_out and not (_batch_outermost(src) and _batch_outermost(node)):
        raise QuantError(f"{node.meta['path']}: {label} with the batch inside its value (the program's per-sample "
                         "reshape would mix samples)")
    if shape_in == shape_out:
        return replace(v, scale=scale)
    out = lw.op("Reshape", name, [v.name], v.bits, v.signed, scale, attrs={"shape": list(shape_out)},
                zero_point=v.zero_point)
    return replace(v, name=out, scale=scale)


def _is_cat(node: fx.Node) -> bool:
    return node.meta.get("kind") == "layout" and node.target is torch.cat


def _batch_outermost(node: fx.Node) -> bool:
    """True when the batch is the outermost factor of ``node``'s flat element order (all axes before it have size 1),
    so that a per-sample reshape equals the batched one."""
    bdim = node.meta.get("bdim")
    return bdim is None or int(np.prod(node.meta["value1"].shape[:bdim])) == 1


def _sample_perm(node: fx.Node, src: fx.Node) -> list[int]:
    nd = src.meta["value1"].dim()
    args = [a for a in node.args[1:]]
    if isinstance(node.target, str) and node.target == "transpose" or getattr(node.target, "__name__", "") == "transpose":
        i, j = int(args[0]) % nd, int(args[1]) % nd
        perm = list(range(nd))
        perm[i], perm[j] = perm[j], perm[i]
    else:
        perm = [int(p) % nd for p in (args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args)]
    bdim = src.meta.get("bdim")
    if bdim is None or not _batch_share(src):  # a constant, or the batch merged into an axis (B * nW): it keeps nW
        return perm
    keep = [p for p in perm if p != bdim]
    return [p - (1 if p > bdim else 0) for p in keep]


def _unbind(lw: Lowering, node: fx.Node, name: str) -> Val:
    (src,) = node.all_input_nodes
    v = lw.vals[src]
    dim = int(node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0))
    axis = _sample_axis(src, dim)
    shape = lw.shape(src)
    parts = []
    full = np.broadcast_to(v.scale, shape)
    for i in range(shape[axis]):
        sl = lw.op("Slice", f"{name}.{i}", [v.name], v.bits, v.signed, full.take([i], axis=axis),
                   attrs={"axis": axis, "start": i, "stop": i + 1}, zero_point=v.zero_point)
        squeezed = shape[:axis] + shape[axis + 1:]
        scale = full.take(i, axis=axis)
        out = lw.op("Reshape", f"{name}.{i}.squeeze", [sl], v.bits, v.signed, scale, attrs={"shape": list(squeezed)},
                    zero_point=v.zero_point)
        parts.append(replace(v, name=out, scale=scale.copy()))
    return Val(parts=parts)


def _split(lw: Lowering, node: fx.Node, name: str, label: str) -> Val:
    """``split`` (sizes or one size) and ``chunk`` (a count) along one axis: a Slice per part."""
    (src,) = [a for a in node.all_input_nodes if a in lw.vals]
    v = lw.vals[src]
    dim = int(node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0))
    axis = _sample_axis(src, dim)
    shape = lw.shape(src)
    arg = node.kwargs.get("split_size_or_sections", node.kwargs.get("chunks", node.args[1]))
    if label == "chunk":
        step = -(-shape[axis] // int(arg))
        sizes = [min(step, shape[axis] - i) for i in range(0, shape[axis], step)]
    elif isinstance(arg, int):
        sizes = [min(arg, shape[axis] - i) for i in range(0, shape[axis], arg)]
    else:
        sizes = [int(a) for a in arg]
    full = np.broadcast_to(v.scale, shape)
    parts, start = [], 0
    for i, size in enumerate(sizes):
        scale = full.take(range(start, start + size), axis=axis)
        out = lw.op("Slice", f"{name}.{i}", [v.name], v.bits, v.signed, scale,
                    attrs={"axis": axis, "start": start, "stop": start + size}, zero_point=v.zero_point)
        parts.append(replace(v, name=out, scale=scale.copy()))
        start += size
    return Val(parts=parts)


def _index(lw: Lowering, node: fx.Node, src: fx.Node, v: Val, name: str, scale: np.ndarray) -> Val:
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    nd = src.meta["value1"].dim()
    cut = [(ax, ix) for ax, ix in enumerate(index) if not (isinstance(ix, slice) and ix == slice(None))]
    if len(cut) != 1 or any(ix is Ellipsis or ix is None for _, ix in cut):
        raise QuantError(f"{node.meta['path']}: indexing {index} cannot be lowered (one int or slice on one axis)")
    ax, ix = cut[0]
    axis = _sample_axis(src, ax % nd)
    size = lw.shape(src)[axis]
    start, stop, step = (ix, ix + 1, 1) if isinstance(ix, int) else ix.indices(size)
    if step != 1:
        raise QuantError(f"{node.meta['path']}: strided slices cannot be lowered")
    full = np.broadcast_to(v.scale, lw.shape(src))
    sl = lw.op("Slice", name, [v.name], v.bits, v.signed, full.take(range(start % size, stop), axis=axis),
               attrs={"axis": axis, "start": start % size, "stop": stop}, zero_point=v.zero_point)
    if isinstance(ix, int):
        sl = lw.op("Reshape", f"{name}.squeeze", [sl], v.bits, v.signed, scale, attrs={"shape": list(lw.shape(node))},
                   zero_point=v.zero_point)
    return replace(v, name=sl, scale=scale)


def _cat(lw: Lowering, node: fx.Node, name: str) -> Val:
    items = node.args[0]
    dim = int(node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0))
    target, site = lw.target_scale(node)
    axis = _sample_axis(node, dim)
    names, offset = [], 0
    for item in items:
        v = lw.vals[item]
        n = lw.shape(item)[axis] if v.const is None or item.meta.get("bdim") is not None else v.const.shape[axis]
        part = target.take(range(offset, offset + n), axis=axis)
        offset += n
        if v.const is not None:
            v = lw.quantize_const(f"{name}.{len(names)}", v.const.reshape(part.shape), part, site.bits, site.signed,
                                  site.zero_point)
        elif v.acc or v.bits != site.bits or v.signed != site.signed or v.zero_point or not _same(v.scale, part, part.shape):
            v = lw.requant(f"{name}.{len(names)}.requant", v, part, site.bits, site.signed, site.zero_point)
        names.append(v.name)
    out = lw.op("Concat", name, names, site.bits, site.signed, target, attrs={"axis": axis}, zero_point=site.zero_point)
    return Val(out, target, site.bits, site.signed, site.zero_point)


def lower(qg: QuantGraph, name: str, metadata: dict[str, Any]) -> Program:
    """The integer program computing ``qg`` (in quant mode with integer nonlinear ops) on integers. Formats still
    being learnt (LSQ) and rectifiers not yet folded are refused: quant.qat.finish settles both."""
    learning = [s.name for s in qg.sites.values() if s.lsq is not None or s.lsq_zero is not None]
    learning += [g.name for g in qg.gemms.values() if g.module is not None and g.module.wq.lsq is not None]
    unfolded = [g.name for g in qg.gemms.values() if getattr(g.module, "rectifier", None) is not None]
    if unfolded:
        raise QuantError(f"{unfolded[0]}: its output rectification must be folded into the weights before lowering")
    if learning:
        raise QuantError(f"{learning[0]}: its scale is still being learnt; freeze it before lowering")
    return Lowering(qg, name).run(metadata)


from quant import lower_hybrid as _lower_hybrid  # noqa: E402,F401  (registers the hybrid ops' emitters)

"""Quantization sites derived from the captured graph, and the fake-quant graph module built around them.

``QuantGraph.build(captured, bits)`` copies the traced float graph and
- swaps every Linear / Conv2d for ``QuantLinear`` / ``QuantConv2d`` and LayerNorm, softmax and GELU for their
  quantized modules (quant.fakequant);
- puts an ``ActQuant`` on the input edge of every GEMM operand, named after the consumer (``blocks.3.attn.qkv.in``,
  ``blocks.3.attn.matmul_qk.a`` / ``.b``), with a role from the producer: ``ptf`` after a LayerNorm, ``skewed``
  after GELU, ``softmax`` after softmax, ``head`` for MatMul operands, else ``tensor``;
- puts a 16-bit ``internal`` site after every Add (the residual stream) with ``AlignQuant`` on its inputs, on the
  graph output, and on the input of softmax, GELU and LayerNorm where that input has no grid yet (a raw
  accumulator, a sum, a concatenation);
- wires each nonlinear module to the sites around it (its input grid, the grid it produces).
Sites are addressed by these names in mixed-precision maps, reports and ``vitsim verify``. The bit-width of a GEMM's
operand sites is the GEMM's ``abits``; its weights take ``wbits`` (quant.mixed_precision resolves both by name).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx

from quant.fakequant import (INTERNAL_BITS, ActQuant, AlignQuant, QuantConv2d, QuantGELU, QuantLayerNorm,
                             QuantLinear, QuantSoftmax, _Nonlinear)
from quant.hybrid_modules import QuantAvgPool2d, QuantHardswish, QuantMulConst, QuantSiLU
from quant.graph.capture import Captured
from quant.parts import QuantError

GEMM_KINDS = ("linear", "conv2d", "matmul")
PASS_THROUGH = ("layout", "scale")
# Producers whose output is one-sided (mostly >= 0): the GEMM operand after them may take a zero point.
SKEWED_SOURCES = {"gelu": "skewed", "silu": "skewed", "hardswish": "skewed", "relu": "skewed"}
# Ops with an integer kernel that need their input on a grid (a site), in the order they are wired.
UNARY_KINDS = ("layernorm", "softmax", "gelu", "silu", "hardswish", "avgpool")


def gemm_layers(captured: Captured) -> dict[str, str]:
    """Quantizable layers (name -> op type: linear, conv, matmul) in execution order, for mixed-precision maps."""
    names = {"linear": "linear", "conv2d": "conv", "matmul": "matmul"}
    return {n.meta["path"]: names[n.meta["kind"]] for n in captured.gm.graph.nodes if n.meta.get("kind") in names}


def _source(node: fx.Node) -> fx.Node:
    """The producer of ``node``'s value, looking through layout ops and scalings."""
    while isinstance(node, fx.Node) and node.meta.get("kind") in PASS_THROUGH and node.all_input_nodes:
        node = node.all_input_nodes[0]
    return node


def _users_through(node: fx.Node) -> list[fx.Node]:
    """The consumers of ``node``'s value, looking through layout ops and scalings."""
    out = []
    for u in node.users:
        if u.meta.get("kind") == "meta":  # shape arithmetic reads no values
            continue
        out += _users_through(u) if u.meta.get("kind") in PASS_THROUGH else [u]
    return out


@dataclass
class Gemm:
    name: str
    kind: str
    module: QuantLinear | QuantConv2d | None
    inputs: list[ActQuant]
    wbits: int
    abits: int


class QuantGraph(torch.nn.Module):
    """The fake-quant model: the traced graph with quantizers in it, plus the index of its sites and GEMMs."""

    def __init__(self, gm: fx.GraphModule, sites: dict[str, ActQuant], gemms: dict[str, Gemm],
                 input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.gm = gm
        self.sites = sites
        self.gemms = gemms
        self.input_shape = input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gm(x)

    def set_mode(self, mode: str) -> None:
        for site in self.sites.values():
            site.mode = mode
        for g in self.gemms.values():
            if g.module is not None:
                g.module.wq.enabled = mode == "quant"

    def set_integer_nonlinear(self, integer: bool) -> None:
        for m in self.nonlinear():
            m.integer = integer

    def nonlinear(self) -> list[_Nonlinear]:
        return [m for m in self.gm.modules() if isinstance(m, _Nonlinear)]

    @staticmethod
    def build(captured: Captured, bits: dict[str, dict[str, int]],
              code_bits: Callable[[int], int | None], softmax_per_head: bool = False) -> "QuantGraph":
        """``bits``: per GEMM name, ``{"wbits", "abits"}`` (quant.mixed_precision resolves a map into this);
        ``code_bits``: the width of log softmax codes at a MatMul's abits, None for uniform codes at abits
        (quant.methods.base.Method.softmax_code_bits). ``softmax_per_head``: the softmax writes 16-bit uniform
        probabilities (a ``probs`` site, step 2^-16) that the MatMul's operand site requantizes with one scale per
        head (Q-ViT's per-head attention quantizer)."""
        gm = copy.deepcopy(captured.gm)
        graph = gm.graph
        holder = torch.nn.Module()
        gm.add_submodule("q", holder)
        sites: dict[str, ActQuant] = {}
        gemms: dict[str, Gemm] = {}

        def add_module(name: str, module: torch.nn.Module) -> str:
            key = name.replace(".", "__")
            holder.add_module(key, module)
            return f"q.{key}"

        def site_on_edge(consumer: fx.Node, arg: fx.Node, name: str, role: str, nbits: int,
                         max_exp: int | None = None) -> ActQuant:
            site = ActQuant(name, role, nbits, max_exp)
            target = add_module(name, site)
            with graph.inserting_before(consumer):
                q = graph.call_module(target, (arg,))
            q.meta.update({"kind": "site", "path": name, **{k: arg.meta[k] for k in ("bdim", "per_sample", "value1")
                                                              if k in arg.meta}})
            consumer.replace_input_with(arg, q)
            sites[name] = site
            return site

        def site_after(node: fx.Node, name: str, role: str, nbits: int) -> ActQuant:
            site = ActQuant(name, role, nbits)
            target = add_module(name, site)
            users = list(node.users)
            with graph.inserting_after(node):
                q = graph.call_module(target, (node,))
            q.meta.update({"kind": "site", "path": name, **{k: node.meta[k] for k in ("bdim", "per_sample", "value1")
                                                              if k in node.meta}})
            for u in users:
                u.replace_input_with(node, q)
            sites[name] = site
            return site

        def swap(node: fx.Node, module: torch.nn.Module) -> None:
            if node.op == "call_module":
                parent, _, leaf = node.target.rpartition(".")
                setattr(gm.get_submodule(parent) if parent else gm, leaf, module)
            else:  # a softmax method call becomes a module call
                node.op, node.target = "call_module", add_module(node.meta["path"], module)
                node.args, node.kwargs = (node.args[0],), {}

        for node in list(graph.nodes):
            kind, name = node.meta.get("kind"), node.meta.get("path")
            if kind in ("linear", "conv2d"):
                b = bits[name]
                module = gm.get_submodule(node.target)
                q = QuantLinear(name, module, b["wbits"]) if kind == "linear" else QuantConv2d(name, module, b["wbits"])
                swap(node, q)
                src = _source(node.args[0])
                role = {"layernorm": "ptf", **SKEWED_SOURCES}.get(src.meta.get("kind"), "tensor")
                if role == "ptf" and (len(_users_through(src)) > 1 or kind != "linear"):
                    role = "tensor"  # PTF's factors run along a Linear's input features (the last axis)
                site = site_on_edge(node, node.args[0], f"{name}.in", role, b["abits"])
                q.input_site.append(site)
                gemms[name] = Gemm(name, kind, q, [site], b["wbits"], b["abits"])
            elif kind == "matmul":
                b = bits[name]
                a_src = _source(node.args[0])
                role_a = "softmax" if a_src.meta.get("kind") == "softmax" else "head"
                sa = site_on_edge(node, node.args[0], f"{name}.a", role_a, b["abits"])
                sb = site_on_edge(node, node.args[1], f"{name}.b", "head", b["abits"])
                if role_a == "softmax" and code_bits(b["abits"]) is not None:
                    sa.bits = code_bits(b["abits"])
                gemms[name] = Gemm(name, kind, None, [sa, sb], 0, b["abits"])
            elif kind in ("add", "sub"):
                leader = site_after(node, name, "internal", INTERNAL_BITS)
                for i, arg in enumerate(node.args):
                    if isinstance(arg, fx.Node):
                        align = AlignQuant(f"{name}.in{i}", leader)
                        target = add_module(f"{name}.in{i}", align)
                        with graph.inserting_before(node):
                            q = graph.call_module(target, (arg,))
                        q.meta.update({"kind": "align", "path": f"{name}.in{i}",
                                       **{k: arg.meta[k] for k in ("bdim", "per_sample", "value1")
                                          if k in arg.meta}})
                        node.replace_input_with(arg, q)
            elif kind == "output":
                (arg,) = node.args
                if isinstance(arg, (tuple, list)):
                    raise QuantError("models with several outputs are not supported")
                site_on_edge(node, arg, "logits", "internal", INTERNAL_BITS)

        def input_grid(node: fx.Node, kind: str) -> ActQuant:
            """The site whose grid ``node``'s first input is on; a new 16-bit one when it has none yet (a raw
            accumulator, a sum, a concatenation)."""
            src = _source(node.args[0])
            if src.meta.get("kind") in ("site", "align"):
                site = gm.get_submodule(src.target)
                return site.leader[0] if isinstance(site, AlignQuant) else site
            return site_on_edge(node, node.args[0], f"{node.meta['path']}.in", "internal", INTERNAL_BITS,
                                max_exp=0 if kind in ("softmax", "gelu", "silu", "hardswish") else None)

        # A reduction sums codes: an accumulator (a conv's activation output) gets a 16-bit grid first.
        for node in list(graph.nodes):
            if node.meta.get("kind") in ("sum", "mean") and isinstance(node.args[0], fx.Node) \
                    and _source(node.args[0]).meta.get("kind") not in ("site", "align", "layernorm"):
                input_grid(node, node.meta["kind"])

        # Multiplies by a constant: the constant's codes are the module's; x keeps (or gets) its grid.
        for node in list(graph.nodes):
            if node.meta.get("kind") != "mul":
                continue
            consts = [a for a in node.args if isinstance(a, fx.Node) and a.meta.get("const")]
            if len(consts) != 1 or len(node.args) != 2 or node.kwargs:
                raise QuantError(f"{node.meta['path']}: only a product of a tensor and a constant lowers")
            data = [a for a in node.args if a is not consts[0]][0]
            module = QuantMulConst(node.meta["path"])
            node.op, node.target = "call_module", add_module(node.meta["path"], module)
            node.args, node.kwargs = (data, consts[0]), {}
            module.in_site.append(input_grid(node, "mul"))

        # Nonlinear ops: swap in the quantized module, give it the grid of its input and of the value it produces.
        for node in list(graph.nodes):
            kind, name = node.meta.get("kind"), node.meta.get("path")
            if kind not in UNARY_KINDS:
                continue
            if kind == "layernorm":
                module = QuantLayerNorm(name, gm.get_submodule(node.target))
            elif kind == "softmax":
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else -1)
                if node.op == "call_module":
                    dim = gm.get_submodule(node.target).dim
                if dim not in (-1, len(node.meta["value1"].shape) - 1):
                    raise QuantError(f"{name}: softmax over axis {dim}; the integer softmax runs over the last axis")
                module = QuantSoftmax(name)
            elif kind == "avgpool":
                module = QuantAvgPool2d(name, gm.get_submodule(node.target))
            else:
                module = {"gelu": QuantGELU, "silu": QuantSiLU, "hardswish": QuantHardswish}[kind](name)
            swap(node, module)
            in_site = input_grid(node, kind)
            if kind in ("softmax", "gelu", "silu", "hardswish") and in_site.max_exp is None:
                in_site.max_exp = 0  # the shift exponential takes f >= 0 fractional bits
            module.in_site.append(in_site)
            users = _users_through(node)
            if kind in ("gelu", "silu", "hardswish", "avgpool"):
                continue
            out_sites = [gm.get_submodule(u.target) for u in users if u.meta.get("kind") == "site"]
            if kind == "layernorm" and (len(out_sites) != 1 or len(users) != 1):
                out_sites = [site_after(node, name, "internal", INTERNAL_BITS)]
            if kind == "softmax" and (len(out_sites) != 1 or out_sites[0].role != "softmax"):
                raise QuantError(f"{name}: the softmax output must feed one MatMul")
            if kind == "softmax" and softmax_per_head and code_bits(out_sites[0].bits) is None:
                out_sites[0].per_head = True
                probs = site_after(node, f"{name}.out", "probs", INTERNAL_BITS)
                probs.signed = False
                probs.producer.append(module)
                out_sites = [probs]
            module.out_site.append(out_sites[0])
        graph.lint()
        gm.recompile()
        qg = QuantGraph(gm, sites, gemms, captured.input_shape)
        qg.eval()
        return qg

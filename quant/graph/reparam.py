"""Float re-parameterisations applied at capture: each rewrites the model into one that computes the same function
with fewer kinds of integer op, so the quantizer and the lowering never meet them.

- ``fold_attention_scale``: the 1/sqrt(d) of attention goes into q's rows of the qkv projection (the logits leave
  Q.K^T already scaled; Vaswani et al., 2017, eq. 1).
- ``fold_channel_scales``: a per-channel multiply by a constant right after a Linear (LayerScale, Touvron et al.,
  "Going deeper with image transformers", ICCV 2021, and DeiT III) becomes part of that Linear's rows and bias.
- ``fold_mean_into_linear``: a mean over tokens read only by Linears becomes a sum, and the 1/N goes into the
  Linears' weights (W (sum / N) + b = (W / N) sum + b): global average pooling needs no divider and no non-power-of-two
  requantization.
"""
from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.fx as fx


def fold_attention_scale(model: torch.nn.Module) -> None:
    """Fold the attention scale of every timm attention (a module with ``qkv`` and ``scale``) into the q rows of its
    qkv projection, in place."""
    for m in model.modules():
        qkv, scale = getattr(m, "qkv", None), getattr(m, "scale", None)
        if not isinstance(qkv, torch.nn.Linear) or not isinstance(scale, float) or scale == 1.0:
            continue
        c = qkv.out_features // 3
        with torch.no_grad():
            qkv.weight[:c] *= scale
            if qkv.bias is not None:
                qkv.bias[:c] *= scale
        m.scale = 1.0


def _linear_of(gm: fx.GraphModule, node: Any) -> torch.nn.Linear | None:
    """The Linear module ``node`` calls, if it calls one and its value has no other reader."""
    if not isinstance(node, fx.Node) or node.op != "call_module":
        return None
    m = gm.get_submodule(node.target)
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == node.target]
    return m if isinstance(m, torch.nn.Linear) and len(calls) == 1 else None


def _is_mul(n: fx.Node) -> bool:
    return n.target in (operator.mul, torch.mul) or n.op == "call_method" and n.target in ("mul", "mul_")


def fold_channel_scales(gm: fx.GraphModule) -> int:
    """``linear(x) * gamma`` with a constant per-output-channel ``gamma`` -> one Linear with scaled rows; returns the
    number folded."""
    folded = 0
    for n in list(gm.graph.nodes):
        if not _is_mul(n) or len(n.args) != 2 or n.kwargs:
            continue
        for lin_node, const_node in (n.args, n.args[::-1]):
            linear = _linear_of(gm, lin_node)
            if linear is None or len(lin_node.users) != 1 or not isinstance(const_node, fx.Node) \
                    or const_node.op != "get_attr":
                continue
            gamma = _attr(gm, const_node.target)
            if not isinstance(gamma, torch.Tensor) or gamma.numel() != linear.out_features \
                    or any(s != 1 for s in gamma.shape[:-1]):
                continue
            g = gamma.detach().reshape(-1).to(linear.weight.dtype)
            with torch.no_grad():
                linear.weight.mul_(g[:, None])
                if linear.bias is not None:
                    linear.bias.mul_(g)
            n.replace_all_uses_with(lin_node)
            gm.graph.erase_node(n)
            folded += 1
            break
    gm.graph.eliminate_dead_code()
    return folded


def _is_mean(n: fx.Node) -> bool:
    return n.target is torch.mean or n.op == "call_method" and n.target == "mean"


def fold_mean_into_linear(gm: fx.GraphModule, values: dict[fx.Node, Any]) -> int:
    """``linear(x.mean(dims))`` (dims not the channel axis) -> ``linear'(x.sum(dims))`` with W' = W / N; returns the
    number folded. ``values`` holds each node's recorded value (for the reduced sizes)."""
    folded = 0
    for n in list(gm.graph.nodes):
        if not _is_mean(n) or not isinstance(n.args[0], fx.Node):
            continue
        x = values.get(n.args[0])
        dims = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)
        if not isinstance(x, torch.Tensor) or dims is None:
            continue
        dims = [int(d) % x.dim() for d in (dims if isinstance(dims, (tuple, list)) else [dims])]
        keepdim = bool(n.kwargs.get("keepdim", n.args[2] if len(n.args) > 2 else False))
        linears = [_linear_of(gm, u) for u in n.users]
        if x.dim() - 1 in dims or keepdim or not linears or any(m is None for m in linears):
            continue
        count = math.prod(x.shape[d] for d in dims)
        with torch.no_grad():
            for m in linears:
                m.weight.div_(count)
        with gm.graph.inserting_before(n):
            total = gm.graph.call_function(torch.sum, (n.args[0],), {"dim": tuple(dims)})
        total.meta.update(n.meta)
        n.replace_all_uses_with(total)
        gm.graph.erase_node(n)
        folded += 1
    return folded


def _attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj

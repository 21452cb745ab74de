"""Float re-parameterisations applied at capture: each rewrites the model into one that computes the same function
with fewer kinds of integer op, so the quantizer and the lowering never meet them.

- ``fold_attention_scale``: the 1/sqrt(d) of attention goes into q's rows of the qkv projection (the logits leave
  Q.K^T already scaled; Vaswani et al., 2017, eq. 1).
- ``fold_channel_scales``: a per-channel multiply by a constant right after a Linear (LayerScale, Touvron et al.,
  "Going deeper with image transformers", ICCV 2021, and DeiT III) becomes part of that Linear's rows and bias.
- ``fold_batchnorm``: an eval-mode BatchNorm right after a convolution becomes part of that convolution's weights and
  bias (Ioffe & Szegedy, 2015; the float fold of Jacob et al., CVPR 2018, sec. 3.2), before any quantization, so the
  program has no BatchNorm op and the folded weights are what gets quantized.
- ``pool_to_mean``: global average pooling (``AdaptiveAvgPool2d(1)``, then a flatten) becomes a mean over the map,
  which ``fold_mean_into_linear`` then turns into a sum when a Linear reads it (the classifier of a CNN or hybrid).
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


def _linear_of(gm: fx.GraphModule, node: Any, conv: bool = False) -> torch.nn.Module | None:
    """The Linear (or, with ``conv``, Conv2d) module ``node`` calls, if it calls one that nothing else calls."""
    if not isinstance(node, fx.Node) or node.op != "call_module":
        return None
    m = gm.get_submodule(node.target)
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == node.target]
    kinds = (torch.nn.Linear, torch.nn.Conv2d) if conv else (torch.nn.Linear,)
    return m if isinstance(m, kinds) and len(calls) == 1 else None


def _is_mul(n: fx.Node) -> bool:
    return n.target in (operator.mul, torch.mul) or n.op == "call_method" and n.target in ("mul", "mul_")


def fold_channel_scales(gm: fx.GraphModule) -> int:
    """``linear(x) * gamma`` with a constant per-output-channel ``gamma`` -> one Linear with scaled rows (also a
    Conv2d with ``gamma`` shaped [1, C, 1, 1]: EfficientFormer's LayerScale2d); returns the number folded."""
    folded = 0
    for n in list(gm.graph.nodes):
        if not _is_mul(n) or len(n.args) != 2 or n.kwargs:
            continue
        for lin_node, const_node in (n.args, n.args[::-1]):
            linear = _linear_of(gm, lin_node, conv=True)
            if linear is None or len(lin_node.users) != 1 or not isinstance(const_node, fx.Node) \
                    or const_node.op != "get_attr":
                continue
            gamma = _attr(gm, const_node.target)
            is_conv = isinstance(linear, torch.nn.Conv2d)
            outs = linear.out_channels if is_conv else linear.out_features
            channel_axis = -3 if is_conv else -1
            if not isinstance(gamma, torch.Tensor) or gamma.numel() != outs or gamma.dim() < -channel_axis \
                    or gamma.shape[channel_axis] != outs:
                continue
            g = gamma.detach().reshape(-1).to(linear.weight.dtype)
            with torch.no_grad():
                linear.weight.mul_(g.reshape(-1, *[1] * (linear.weight.dim() - 1)))
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
    """``linear(x.mean(dims))`` -> ``linear'(x.sum(dims))`` with W' = W / N (tokens [B, N, C] over N, maps
    [B, C, H, W] over H and W); returns the number folded. ``values`` holds each node's recorded value (for the
    reduced sizes)."""
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
        if keepdim or not linears or any(m is None for m in linears):
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


def _batchnorm_parts(gm: fx.GraphModule, n: fx.Node) -> tuple[fx.Node, tuple[torch.Tensor, ...], float] | None:
    """(input, (mean, var, weight, bias), eps) of an eval-mode BatchNorm node, module or functional."""
    if n.op == "call_module":
        bn = gm.get_submodule(n.target)
        if not isinstance(bn, torch.nn.modules.batchnorm._BatchNorm) or bn.training or bn.running_mean is None:
            return None
        return n.args[0], (bn.running_mean, bn.running_var, bn.weight, bn.bias), bn.eps
    if n.target is not torch.nn.functional.batch_norm:
        return None
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    bound = {**dict(zip(names, n.args)), **n.kwargs}
    if bound.get("training", False):
        return None

    def value(a: Any) -> torch.Tensor | None:
        return _attr(gm, a.target) if isinstance(a, fx.Node) and a.op == "get_attr" else a

    parts = tuple(value(bound.get(k)) for k in ("running_mean", "running_var", "weight", "bias"))
    return bound["input"], parts, float(bound.get("eps", 1e-5))


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """``bn(conv(x))`` in eval mode -> ``conv'(x)`` with the BatchNorm folded into its weights and bias; returns the
    number folded. A BatchNorm not right after a convolution is left in place (the capture then names it as an op
    without a lowering)."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = 0
    for n in list(gm.graph.nodes):
        parts = _batchnorm_parts(gm, n)
        if parts is None:
            continue
        src, (mean, var, weight, bias), eps = parts
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv = gm.get_submodule(src.target)
        calls = [m for m in gm.graph.nodes if m.op == "call_module" and m.target == src.target]
        if not isinstance(conv, torch.nn.Conv2d) or len(calls) != 1:
            continue
        with torch.no_grad():
            w, b = fuse_conv_bn_weights(conv.weight, conv.bias, mean, var, eps, weight, bias)
        conv.weight, conv.bias = w, b
        n.replace_all_uses_with(src)
        gm.graph.erase_node(n)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    return folded


def _is_flatten_from_1(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        return isinstance(m, torch.nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if n.target is torch.flatten or n.op == "call_method" and n.target == "flatten":
        start = n.kwargs.get("start_dim", n.args[1] if len(n.args) > 1 else 0)
        end = n.kwargs.get("end_dim", n.args[2] if len(n.args) > 2 else -1)
        return start == 1 and end == -1
    return False


def pool_to_mean(gm: fx.GraphModule) -> int:
    """Global average pooling of NCHW maps (``AdaptiveAvgPool2d(1)``) -> ``x.mean((2, 3))``, the flatten after it
    dropped (a flatten from axis 1 of [B, C] changes nothing), or ``keepdim`` kept for other readers; returns the
    number rewritten."""
    count = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_module" or not isinstance(gm.get_submodule(n.target), torch.nn.AdaptiveAvgPool2d):
            continue
        if gm.get_submodule(n.target).output_size not in (1, (1, 1)):
            continue
        users = list(n.users)
        flat = len(users) > 0 and all(_is_flatten_from_1(gm, u) for u in users)
        with gm.graph.inserting_before(n):
            mean = gm.graph.call_function(torch.mean, (n.args[0],), {"dim": (2, 3), "keepdim": not flat})
        mean.meta.update(n.meta)
        if flat:
            for u in users:
                u.replace_all_uses_with(mean)
                gm.graph.erase_node(u)
        n.replace_all_uses_with(mean)
        gm.graph.erase_node(n)
        count += 1
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    return count


def _attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj

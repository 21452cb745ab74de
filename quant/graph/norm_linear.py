"""LayerNorm -> Linear pairs of a traced graph, where a per-channel re-parameterisation of the LayerNorm output can be
folded into the LayerNorm's affine and the Linear's input columns, leaving the float model unchanged.

Used by P^2-ViT's power-of-two smoothing (quant.methods.p2vit) and RepQ-ViT's scale re-parameterisation
(quant.methods.repq): ``norm_linear_pairs`` finds the pairs, ``channel_ranges`` measures the LayerNorm outputs on
calibration images, ``fold_channel_affine`` applies X'_j = X_j / r_j + t_j (the LayerNorm computes X') and
W'_ij = W_ij r_j, b' = b - W' t (the Linear reads X').
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from quant.calibrate import batches
from quant.graph.capture import Captured


@dataclass(frozen=True)
class NormLinear:
    norm: str          # LayerNorm module path
    linear: str        # the one Linear reading it
    attention: bool    # the Linear feeds a MatMul (qkv)


def _channel_source(node: fx.Node) -> fx.Node:
    """The producer of ``node``'s value through layout ops that keep the channel (last) axis whole and in place:
    Swin's cyclic shift and window partition between norm1 and qkv move tokens, never channels."""
    channels = node.meta["value1"].shape[-1]
    while node.meta.get("kind") == "layout" and isinstance(node.args[0], fx.Node):
        src = node.args[0]  # the data; further node arguments are shape arithmetic
        if not isinstance(src.meta.get("value1"), torch.Tensor) or src.meta["value1"].shape[-1] != channels:
            break
        if node.target in ("permute", "transpose", torch.permute, torch.transpose):
            nd = src.meta["value1"].dim()
            axes = [a for a in node.args[1:] if isinstance(a, int)]
            if (nd - 1) in [a % nd for a in axes] and not (node.target in ("permute", torch.permute)
                                                            and [a % nd for a in axes][-1] == nd - 1):
                break
        node = src
    return node


def norm_linear_pairs(captured: Captured) -> list[NormLinear]:
    """Every LayerNorm read by one Linear and nothing else, directly or through token-moving layout ops."""
    from quant.sites import _users_through

    pairs = []
    for node in captured.nodes("linear"):
        src = _channel_source(node.args[0])
        if src.meta.get("kind") == "layernorm" and len(_users_through(src)) == 1:
            attention = any(u.meta.get("kind") == "matmul" for u in _users_through(node))
            pairs.append(NormLinear(src.target, node.target, attention))
    return pairs


@dataclass
class ChannelRange:
    lo: torch.Tensor   # per channel minimum [C]
    hi: torch.Tensor   # per channel maximum [C]

    @property
    def absmax(self) -> torch.Tensor:
        return torch.maximum(self.lo.abs(), self.hi.abs())


@torch.no_grad()
def channel_ranges(captured: Captured, norms: list[str], images: torch.Tensor) -> dict[str, ChannelRange]:
    """Per-channel minimum and maximum of each LayerNorm's output over ``images`` (float64)."""
    gm = captured.gm
    out: dict[str, ChannelRange] = {}

    def hook(name: str):
        def record(module, args, y):
            rows = y.detach().double().reshape(-1, y.shape[-1])
            lo, hi = rows.amin(0), rows.amax(0)
            if name in out:
                lo, hi = torch.minimum(out[name].lo, lo), torch.maximum(out[name].hi, hi)
            out[name] = ChannelRange(lo, hi)
        return record

    handles = [gm.get_submodule(n).register_forward_hook(hook(n)) for n in norms]
    try:
        for batch in batches(images):
            gm(batch.float())
    finally:
        for h in handles:
            h.remove()
    return out


@torch.no_grad()
def fold_channel_affine(captured: Captured, pair: NormLinear, r: torch.Tensor, t: torch.Tensor | None = None) -> None:
    """Make the LayerNorm output X' = X / r + t per channel and the Linear read X' instead of X (same function)."""
    norm, linear = captured.gm.get_submodule(pair.norm), captured.gm.get_submodule(pair.linear)
    r = r.double()
    t = torch.zeros_like(r) if t is None else t.double()
    w = linear.weight.double()
    norm.weight.copy_((norm.weight.double() / r).to(norm.weight.dtype))
    norm.bias.copy_((norm.bias.double() / r + t).to(norm.bias.dtype))
    w_new = w * r[None, :]
    if t.abs().max() > 0:
        shift = -(w_new @ t)
        if linear.bias is None:
            linear.bias = torch.nn.Parameter(shift.to(linear.weight.dtype))
        else:
            linear.bias.copy_((linear.bias.double() + shift).to(linear.bias.dtype))
    linear.weight.copy_(w_new.to(linear.weight.dtype))

"""Calibration: run float images through a timm ViT and observe every tensor the integer program will quantize.

Hooks on the unmodified timm modules (no forked timm code) record, per transformer block ``i``:
``blocks.i.in`` / ``blocks.i.mid`` (residual stream before the attention and the MLP branch), the inputs of every
Linear (``<linear>.in``), per-head q, k, v (``blocks.i.attn.q`` ..., heads on the last axis), the scaled attention
logits (``blocks.i.attn.logits``), the GELU input (``blocks.i.mlp.fc1.out``); plus ``input`` (images),
``final`` (residual after the last block) and ``head.out`` (logits).
"""
from __future__ import annotations

from typing import Iterable

import torch
from tqdm import tqdm

from quant.observers import Observer
from quant.parts import QuantError


def prepare_float(model: torch.nn.Module) -> None:
    """Fold the attention scale 1/sqrt(d) into the q rows of every qkv projection, in place.

    The integer softmax then receives logits that are already scaled; the float model stays equivalent.
    """
    for block in model.blocks:
        attn = block.attn
        c = attn.attn_dim
        with torch.no_grad():
            attn.qkv.weight[:c] *= attn.scale
            if attn.qkv.bias is not None:
                attn.qkv.bias[:c] *= attn.scale
        attn.scale = 1.0
        attn.fused_attn = False


@torch.no_grad()
def collect(model: torch.nn.Module, images: Iterable[torch.Tensor], progress: bool = False) -> dict[str, Observer]:
    """Observers for every quantization point, filled by running ``images`` (batches) through ``model``."""
    obs: dict[str, Observer] = {}

    def observe(name: str, x: torch.Tensor) -> None:
        obs.setdefault(name, Observer(name, seed=len(obs))).update(x)

    handles = []

    def pre(name: str):
        return lambda module, args: observe(name, args[0])

    def post(name: str):
        return lambda module, args, out: observe(name, out)

    handles.append(model.patch_embed.register_forward_pre_hook(lambda m, a: observe("input", a[0].permute(0, 2, 3, 1))))
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_pre_hook(pre(f"{name}.in")))
    for i, block in enumerate(model.blocks):
        handles.append(block.register_forward_pre_hook(pre(f"blocks.{i}.in")))
        handles.append(block.norm2.register_forward_pre_hook(pre(f"blocks.{i}.mid")))
        handles.append(block.mlp.fc1.register_forward_hook(post(f"blocks.{i}.mlp.fc1.out")))
        attn = block.attn

        def qkv_hook(module, args, out, i=i, attn=attn):
            b, n, _ = out.shape
            q, k, v = out.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 1, 4, 3)  # [b, n, d, h]
            observe(f"blocks.{i}.attn.q", q)
            observe(f"blocks.{i}.attn.k", k)
            observe(f"blocks.{i}.attn.v", v)
            observe(f"blocks.{i}.attn.logits", torch.einsum("bndh,bmdh->bnmh", q, k))

        handles.append(attn.qkv.register_forward_hook(qkv_hook))
    handles.append(model.blocks[-1].register_forward_hook(post("final")))
    handles.append(model.head.register_forward_hook(post("head.out")))
    model.eval()
    seen = 0
    try:
        for batch in tqdm(images, desc="calibrate", unit="batch", disable=not progress, leave=False):
            if not torch.isfinite(batch).all():
                raise QuantError("a calibration batch contains NaN or Inf")
            model(batch)
            seen += len(batch)
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise QuantError("the calibration set is empty")
    return obs

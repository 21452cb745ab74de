"""Quantize a timm ViT: calibrate, let the method choose every scale, and assemble the integer-faithful QuantViT.

``quantize_vit(model, calib, method, bits_map)`` never modifies ``model``. The layer list it quantizes (for
mixed-precision maps) is ``vit_layers(model)``.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from quant.calibrate import collect, prepare_float
from quant.methods.base import Method, batches
from quant.mixed_precision import MixedPrecisionMap
from quant.parts import QuantError
from quant.qvit import (Activation, QuantAttention, QuantBlock, QuantLayerNorm, QuantLinear, QuantMlp, QuantPatchEmbed,
                        QuantResidualAdd, QuantSoftmax, QuantViT)
from quant.scales import Scale

RESIDUAL_BITS = 16


def check_supported(model: torch.nn.Module) -> None:
    """The architectures this builder handles: timm VisionTransformer with a class token and plain blocks."""
    needed = ("patch_embed", "blocks", "norm", "head", "cls_token", "pos_embed")
    missing = [a for a in needed if getattr(model, a, None) is None]
    if missing:
        raise QuantError(f"{type(model).__name__}: not a class-token timm VisionTransformer (missing {missing}); "
                         "other architectures need their own quantized modules")
    if getattr(model, "no_embed_class", False) or getattr(model, "reg_token", None) is not None:
        raise QuantError("position embedding without the class token, or register tokens, are not supported yet")
    for i, block in enumerate(model.blocks):
        if not isinstance(block.ls1, torch.nn.Identity) or not isinstance(block.attn.q_norm, torch.nn.Identity):
            raise QuantError(f"blocks.{i}: LayerScale / qk-norm blocks are not supported yet")


def vit_layers(model: torch.nn.Module) -> dict[str, str]:
    """Quantizable layers (name -> op type) in execution order, for mixed-precision maps."""
    layers = {"patch_embed.proj": "conv"}
    for i in range(len(model.blocks)):
        p = f"blocks.{i}"
        layers.update({f"{p}.attn.qkv": "linear", f"{p}.attn.matmul": "matmul", f"{p}.attn.proj": "linear",
                       f"{p}.mlp.fc1": "linear", f"{p}.mlp.fc2": "linear"})
    layers["head"] = "linear"
    return layers


def default_map(wbits: int, abits: int, first_last_8bit: bool = True) -> MixedPrecisionMap:
    """Uniform bits, with the patch embedding and the classifier kept at 8 bits (PTQ4ViT / RepQ-ViT practice)."""
    mp = MixedPrecisionMap.uniform(wbits, abits)
    if first_last_8bit:
        mp.layer = {"patch_embed.proj": {"wbits": 8, "abits": 8}, "head": {"wbits": 8, "abits": 8}}
    return mp


@torch.no_grad()
def quantize_vit(model: torch.nn.Module, calib: torch.Tensor, method: Method, bits_map: MixedPrecisionMap,
                 name: str = "vit", metadata: dict[str, Any] | None = None, progress: bool = False) -> QuantViT:
    """Calibrate on ``calib`` (float images [n, c, h, w]) and build the quantized model."""
    check_supported(model)
    if len(calib) == 0:
        raise QuantError("the calibration set is empty")
    if not torch.isfinite(calib).all():
        raise QuantError("the calibration images contain NaN or Inf")
    bits = bits_map.resolve(vit_layers(model))
    fm = copy.deepcopy(model).eval().float()
    prepare_float(fm)
    method.prepare(fm, [calib])
    obs = collect(fm, batches(calib), progress=progress)

    def internal(key: str) -> int:
        return method.internal_exp(obs[key].absmax, RESIDUAL_BITS)

    def act(key: str, nbits: int, consumer: torch.nn.Linear | None = None) -> Activation:
        weight = None if consumer is None else consumer.weight
        return Activation(method.act_scale(obs[key], nbits, consumer=weight), nbits)

    pe = bits["patch_embed.proj"]
    input_act = act("input", pe["abits"])
    embed_exp = internal("blocks.0.in")
    conv = fm.patch_embed.proj
    patch_embed = QuantPatchEmbed(conv, pe["wbits"], method.weight_scale(conv.weight, None, pe["wbits"]), input_act, embed_exp)

    def linear(lname: str, module: torch.nn.Linear, x: Activation, out: Activation | None) -> QuantLinear:
        wb = bits[lname]["wbits"]
        return QuantLinear(lname, module, wb, method.weight_scale(module.weight, obs[f"{lname}.in"].sample(), wb), x, out)

    def norm_out(key: str, nbits: int, consumer: torch.nn.Linear) -> Activation:
        return Activation(method.norm_out_scale(obs[key], nbits, consumer.weight), nbits)

    blocks = []
    for i, blk in enumerate(fm.blocks):
        p = f"blocks.{i}"
        e_in, e_mid = internal(f"{p}.in"), internal(f"{p}.mid")
        e_out = internal(f"blocks.{i + 1}.in" if i + 1 < len(fm.blocks) else "final")
        n1_out = norm_out(f"{p}.attn.qkv.in", bits[f"{p}.attn.qkv"]["abits"], blk.attn.qkv)
        n1 = QuantLayerNorm(f"{p}.norm1", blk.norm1, n1_out)
        mm_bits = bits[f"{p}.attn.matmul"]["abits"]
        d, h = blk.attn.head_dim, blk.attn.num_heads
        # q and k token rows of the calibration sample, for scales chosen by the error of the logits Q.K^T
        qkv_rows = blk.attn.qkv(obs[f"{p}.attn.qkv.in"].sample().float()).double()
        q_rows, k_rows, _ = qkv_rows.reshape(-1, 3, h, d).unbind(1)
        heads = [method.head_scales(obs[f"{p}.attn.q"], mm_bits, q_rows, k_rows),
                 method.head_scales(obs[f"{p}.attn.k"], mm_bits, k_rows, q_rows),
                 method.head_scales(obs[f"{p}.attn.v"], mm_bits)]
        qkv_scale = torch.stack(heads)[:, :, None].expand(3, blk.attn.num_heads, d).reshape(-1)
        qkv_act = Activation(Scale(qkv_scale.contiguous(), axis=-1), mm_bits)
        qkv = linear(f"{p}.attn.qkv", blk.attn.qkv, n1.out, qkv_act)
        logit_exp = min(internal(f"{p}.attn.logits"), 0)
        log2_bits = method.softmax_log2_bits
        softmax = QuantSoftmax(f"{p}.attn.softmax", -logit_exp, log2_bits or mm_bits, log2_bits is not None)
        attn_out = act(f"{p}.attn.proj.in", bits[f"{p}.attn.proj"]["abits"], blk.attn.proj)
        proj = linear(f"{p}.attn.proj", blk.attn.proj, attn_out, Activation(Scale.power_of_two(e_mid), RESIDUAL_BITS))
        attention = QuantAttention(f"{p}.attn", blk.attn, qkv, qkv_act, logit_exp, softmax, attn_out, proj)
        n2_out = norm_out(f"{p}.mlp.fc1.in", bits[f"{p}.mlp.fc1"]["abits"], blk.mlp.fc1)
        n2 = QuantLayerNorm(f"{p}.norm2", blk.norm2, n2_out)
        gelu_in = Activation(Scale.power_of_two(min(internal(f"{p}.mlp.fc1.out"), 0)), RESIDUAL_BITS)
        fc1 = linear(f"{p}.mlp.fc1", blk.mlp.fc1, n2.out, gelu_in)
        gelu_bits = bits[f"{p}.mlp.fc2"]["abits"]
        gelu_scale, gelu_zero = method.skewed_act(obs[f"{p}.mlp.fc2.in"], gelu_bits, blk.mlp.fc2.weight)
        gelu_out = Activation(gelu_scale, gelu_bits, True, gelu_zero)
        fc2 = linear(f"{p}.mlp.fc2", blk.mlp.fc2, gelu_out, Activation(Scale.power_of_two(e_out), RESIDUAL_BITS))
        blocks.append(QuantBlock(p, n1, attention, QuantResidualAdd(f"{p}.add1", e_in, e_mid), n2,
                                 QuantMlp(f"{p}.mlp", fc1, gelu_out, fc2), QuantResidualAdd(f"{p}.add2", e_mid, e_out)))
    norm = QuantLayerNorm("norm", fm.norm, norm_out("head.in", bits["head"]["abits"], fm.head))
    head = linear("head", fm.head, norm.out, Activation(Scale.power_of_two(internal("head.out")), RESIDUAL_BITS))
    meta = {"method": method.name, "bits": bits, "calibration_images": int(len(calib)),
            "input_shape": list(calib.shape[1:]), **(metadata or {})}
    return QuantViT(name, input_act, patch_embed, fm.cls_token.detach(), fm.pos_embed.detach(), embed_exp, blocks,
                    norm, head, internal("head.out"), meta)

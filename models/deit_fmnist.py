"""``deit_fmnist``: a DeiT-style ViT (Touvron et al., 2021) for 1x28x28 Fashion-MNIST, built from timm's VisionTransformer.

Patch 4 -> 7x7 = 49 tokens plus a class token; 6 blocks of width 64, 4 heads, MLP ratio 2 (about 0.2 M parameters).
The bundled checkpoint ``checkpoints/deit_fmnist.safetensors`` is made by ``vitsim train --model deit_fmnist`` (recipe in
``models/train.py``); its metadata JSON records the measured test top-1, seed and recipe.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models._timm import import_timm
from models.registry import register_model

CHECKPOINT = Path(__file__).parent / "checkpoints" / "deit_fmnist.safetensors"
CONFIG = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=6, num_heads=4, mlp_ratio=2.0)


@register_model("deit_fmnist", dataset="fmnist", default_checkpoint=CHECKPOINT)
def deit_fmnist() -> torch.nn.Module:
    vision_transformer = import_timm().models.vision_transformer
    return vision_transformer.VisionTransformer(**CONFIG)

"""``swin_fmnist``: a Swin Transformer (Liu et al., ICCV 2021) for 1x28x28 Fashion-MNIST, built from timm's
SwinTransformer.

Patch 2 -> 14x14 tokens of width 48; stage 1: two blocks in 7x7 windows (2x2 windows, the second block shifted by 3
with timm's attention mask), patch merging to 7x7 tokens of width 96; stage 2: two blocks in one 7x7 window (timm drops
the shift when the window covers the whole map); mean pooling and a linear classifier. MLP ratio 2, 2 and 4 heads
(head width 24), relative-position bias in every block: about 0.21 M parameters.
The bundled checkpoint ``checkpoints/swin_fmnist.safetensors`` is made by ``vitsim train --model swin_fmnist``
(the shared recipe in ``models/train.py``, 40 epochs); its metadata JSON records the measured test
top-1, seed, recipe and training time.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models._timm import import_timm
from models.registry import register_model

CHECKPOINT = Path(__file__).parent / "checkpoints" / "swin_fmnist.safetensors"
CONFIG = dict(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=48, depths=(2, 2), num_heads=(2, 4),
              window_size=7, mlp_ratio=2.0, drop_path_rate=0.1)


@register_model("swin_fmnist", dataset="fmnist", default_checkpoint=CHECKPOINT)
def swin_fmnist() -> torch.nn.Module:
    swin = import_timm().models.swin_transformer
    return swin.SwinTransformer(**CONFIG)

"""``mobilevit_fmnist``: a MobileViT (Mehta & Rastegari, ICLR 2022) for 1x28x28 Fashion-MNIST, built from timm's ByobNet
parts (the MobileNetV2 inverted-residual ``bottle`` block and ``MobileVitBlock``).

A hybrid: convolutions with BatchNorm and SiLU, depthwise 3x3 convolutions, and transformer blocks over the pixels of a
feature map. Layout (about 0.4 M parameters):
- stem: 3x3 conv, stride 2, 16 channels -> 14x14;
- inverted residual (expansion 2) to 24 channels at 14x14, then one (expansion 3, stride 2) to 32 channels at 7x7;
- inverted residual to 48 channels + MobileViT block (local 3x3 conv, 1x1 to width 64, two transformer blocks over the
  49 pixels, 1x1 back, 3x3 fusion with the block's input) at 7x7;
- inverted residual (stride 2) to 64 channels + MobileViT block of width 80 over the 16 pixels of the 4x4 map;
- 1x1 conv to 192 features, global average pooling, linear classifier.
MobileViT unfolds a map into patches of ``patch_size`` pixels; ours use patch size 1 (every pixel a token), because the
7x7 and 4x4 maps of a 28x28 image do not divide into 2x2 patches and timm would then resample them bilinearly.
The bundled checkpoint ``checkpoints/mobilevit_fmnist.safetensors`` is made by ``vitsim train --model mobilevit_fmnist``
(the shared recipe in ``models/train.py``, 30 epochs); its metadata JSON records the measured test top-1, seed, recipe
and training time.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models._timm import import_timm
from models.registry import register_model

CHECKPOINT = Path(__file__).parent / "checkpoints" / "mobilevit_fmnist.safetensors"


def _config():
    timm = import_timm()
    mobilevit, byobnet = timm.models.mobilevit, timm.models.byobnet
    return byobnet.ByoModelCfg(
        blocks=(
            mobilevit._inverted_residual_block(d=1, c=24, s=1, br=2.0),
            mobilevit._inverted_residual_block(d=1, c=32, s=2, br=3.0),
            mobilevit._mobilevit_block(d=1, c=48, s=1, transformer_dim=64, transformer_depth=2, patch_size=1, br=2.0),
            mobilevit._mobilevit_block(d=1, c=64, s=2, transformer_dim=80, transformer_depth=2, patch_size=1, br=2.0),
        ),
        stem_chs=16, stem_type="3x3", stem_pool="", downsample="", act_layer="silu", num_features=192)


@register_model("mobilevit_fmnist", dataset="fmnist", default_checkpoint=CHECKPOINT, recipe=dict(epochs=30))
def mobilevit_fmnist() -> torch.nn.Module:
    model = import_timm().models.byobnet.ByobNet(_config(), in_chans=1, num_classes=10, img_size=28)
    # a CNN has no patch embedding to read its input size from: say it where timm keeps it (models.data.input_shape)
    model.pretrained_cfg = {**(getattr(model, "pretrained_cfg", None) or {}), "input_size": (1, 28, 28)}
    return model

"""Shared fixtures: the bundled deit_fmnist model, its Fashion-MNIST data, and p2vit programs built once per session."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def fmnist_test():
    from models import fmnist

    images, labels = fmnist.load_split("test")
    return fmnist.normalize(images), labels


@pytest.fixture(scope="session")
def deit_fmnist():
    from models.registry import create_model

    return create_model("deit_fmnist")


# A mixed map whose layers read one stored tensor at different widths: q/k at 4 bits beside v at 8 (block 0), the
# reverse (block 1), and 4-bit Linears between 8-bit ones (block 2).
MIXED_LAYERS = {"blocks.0.attn.matmul_qk": {"wbits": 8, "abits": 4}, "blocks.1.attn.matmul_av": {"wbits": 8, "abits": 4},
                "blocks.2.attn.qkv": {"wbits": 4, "abits": 4}, "blocks.2.mlp.fc2": {"wbits": 4, "abits": 4}}


@pytest.fixture(scope="session")
def repq_w4a4(deit_fmnist):
    """deit_fmnist quantized by RepQ-ViT at W4A4 on its default 32 calibration images (seed 0)."""
    from models.data import calibration_data
    from quant.build import default_map, quantize_model
    from quant.methods.repq import RepQViT

    calib = calibration_data("fmnist", deit_fmnist, RepQViT.calibration_images, seed=0)
    return quantize_model(deit_fmnist, calib, RepQViT(), default_map(4, 4), name="deit_fmnist")


@pytest.fixture(scope="session")
def ptq4vit_w4a4(deit_fmnist):
    """deit_fmnist quantized by PTQ4ViT at W4A4 on its default 32 calibration images (seed 0)."""
    from models.data import calibration_data
    from quant.build import default_map, quantize_model
    from quant.methods.ptq4vit import PTQ4ViT

    calib = calibration_data("fmnist", deit_fmnist, PTQ4ViT.calibration_images, seed=0)
    return quantize_model(deit_fmnist, calib, PTQ4ViT(), default_map(4, 4), name="deit_fmnist")


from quant.methods.isvit import ISViT  # noqa: E402


class SulqOnly(ISViT):
    """I&S-ViT's quantizers and SULQ softmax without its SOS reconstruction: the integer program's structure is the
    method's, in seconds (tests of lowering and RTL; SOS itself is tested in tests/quant/test_isvit.py)."""

    def refine(self, qg, calib, progress=False) -> None:
        pass


@pytest.fixture(scope="session")
def isvit_sulq_w4a4(deit_fmnist):
    """deit_fmnist with I&S-ViT's quantizers and SULQ softmax at W4A4 (no SOS), 64 calibration images."""
    from models.data import calibration_data
    from quant.build import default_map, quantize_model

    calib = calibration_data("fmnist", deit_fmnist, 64, seed=0)
    return quantize_model(deit_fmnist, calib, SulqOnly(), default_map(4, 4), name="deit_fmnist")


@pytest.fixture(scope="session")
def p2vit_calibration(deit_fmnist):
    """deit_fmnist calibrated for p2vit on 128 training images (seed 0)."""
    from models.data import calibration_data
    from quant.calibrate import calibrate
    from quant.methods import get_method

    return calibrate(deit_fmnist, calibration_data("fmnist", deit_fmnist, 128, seed=0), get_method("p2vit"))


@pytest.fixture(scope="session")
def p2vit_models(p2vit_calibration):
    """{(wbits, abits): QuantModel} for p2vit W8A8 and W4A4 and {"mixed": ...} (W8A8 with MIXED_LAYERS), from
    ``p2vit_calibration``."""
    from quant.build import default_map, quantize_calibrated

    calibration = p2vit_calibration
    maps = {(w, a): default_map(w, a) for w, a in ((8, 8), (4, 4))}
    maps["mixed"] = default_map(8, 8)
    maps["mixed"].layer = dict(MIXED_LAYERS)
    return {k: quantize_calibrated(calibration, m, name="deit_fmnist", metadata={"input_shape": [1, 28, 28]})
            for k, m in maps.items()}


@pytest.fixture(scope="session")
def p2vit_programs(p2vit_models):
    return {k: q.export() for k, q in p2vit_models.items()}


def int_input(program, n: int = 4, seed: int = 0) -> np.ndarray:
    spec = program.spec(program.inputs[0])
    rng = np.random.default_rng(seed)
    return rng.integers(spec.qmin, spec.qmax + 1, (n,) + spec.shape).astype(np.int32)


@pytest.fixture(scope="session")
def mptq_w4a4(deit_fmnist):
    """deit_fmnist quantized by MPTQ-ViT (SQ-b + OPT-m) at W4A4 on its default 32 calibration images (seed 0)."""
    from models.data import calibration_data
    from quant.build import default_map, quantize_model
    from quant.methods.mptq import MPTQViT

    calib = calibration_data("fmnist", deit_fmnist, MPTQViT.calibration_images, seed=0)
    return quantize_model(deit_fmnist, calib, MPTQViT(), default_map(4, 4), name="deit_fmnist")

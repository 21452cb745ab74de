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


@pytest.fixture(scope="session")
def p2vit_models(deit_fmnist):
    """{(wbits, abits): QuantViT} for p2vit W8A8 and W4A4, calibrated on 128 training images."""
    from models.data import calibration_data
    from quant.build import default_map, quantize_model
    from quant.methods import get_method

    calib = calibration_data("fmnist", deit_fmnist, 128, seed=0)
    return {(w, a): quantize_model(deit_fmnist, calib, get_method("p2vit"), default_map(w, a), name="deit_fmnist",
                                 metadata={"input_shape": [1, 28, 28]})
            for w, a in ((8, 8), (4, 4))}


@pytest.fixture(scope="session")
def p2vit_programs(p2vit_models):
    return {k: q.export() for k, q in p2vit_models.items()}


def int_input(program, n: int = 4, seed: int = 0) -> np.ndarray:
    spec = program.spec(program.inputs[0])
    rng = np.random.default_rng(seed)
    return rng.integers(spec.qmin, spec.qmax + 1, (n,) + spec.shape).astype(np.int32)

"""Integer LayerNorm against float LayerNorm at 16-bit output, through the constants the lowering computes.

Rows spread over 30 to 3000 codes, as a 16-bit residual stream does. Catches a mean rounded to whole codes (I-ViT's
form: 11.6 LSB mean and 170 LSB max error on these rows, against 0.26 and 1.1 with 8 fraction bits), a NORM_BITS that
differs between the kernel and ``layernorm_int_params``, or a lost sqrt(C) in the multiplier (both off by far more).
Rows of a spread of a few codes at 16-bit output would still see the 2^-9-code mean error (about 1 LSB there)."""
from __future__ import annotations

import numpy as np
import torch

from hwsim.kernels.layernorm import layernorm_int
from quant.fakequant import layernorm_int_params


def test_integer_layernorm_is_within_0_3_lsb_on_average_at_16_bits():
    rng = np.random.default_rng(1)
    rows, c = 400, 96
    spread = np.exp(rng.uniform(np.log(30), np.log(3000), (rows, 1)))
    x = np.floor(rng.normal(rng.uniform(-300, 300, (rows, 1)), spread, (rows, c)) + 0.5).astype(np.int64)
    gamma, beta = rng.normal(1.0, 0.3, c), rng.normal(0.0, 0.3, c)
    y = x - x.mean(-1, keepdims=True)
    ref = y / np.sqrt((y * y).mean(-1, keepdims=True)) * gamma + beta
    scale = np.abs(ref).max() / (2**15 - 1)
    p = layernorm_int_params(torch.from_numpy(gamma), torch.from_numpy(beta), torch.tensor([scale], dtype=torch.float64))
    out = np.empty_like(x)
    layernorm_int(x, p["gamma"], p["beta"], p["shift"], -2**15, 2**15 - 1, out)
    err = np.abs(out - ref / scale)
    assert err.mean() < 0.3 and err.max() < 2, (err.mean(), err.max())

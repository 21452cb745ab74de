"""PTQ4ViT (quant/methods/ptq4vit.py): twin-uniform fake-quant means what the integer program computes, the post-GELU
region R1 covers the negative range with the widest ratio that does, and the W4A4 program runs twin codes bit-exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwsim.kernels.twin import requant_twin
from hwsim.reference import ops as R
from quant.fakequant import twin_quant
from quant.methods.ptq4vit import gelu_twin_m, max_twin_m
from tests.quant.test_architectures import assert_exact


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("m", [1, 3, 6])
def test_twin_fake_quant_is_the_integer_requant_and_decode(bits, m):
    """On integer accumulators with a power-of-two step, fake-quant must give exactly decode(requant(x)) * step, or
    fake-quant and the exported program disagree on images."""
    shift = 3
    x = np.arange(-(2 ** (bits + 5)), 2 ** (bits + m + 5), dtype=np.int64).reshape(1, -1)
    codes = np.empty(x.shape, np.int64)
    requant_twin(x, np.ones(1, np.int64), np.array([shift]), m, False, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, codes)
    want = R.twin_decode(codes, bits, m, True) * 2.0**shift
    got = twin_quant(torch.from_numpy(x).double(), torch.tensor(2.0**shift, dtype=torch.float64), bits, m, True)
    assert np.array_equal(got.numpy(), want)


def test_twin_fake_quant_of_probabilities_uses_the_fine_grid_below_its_top():
    bits, m = 4, 3
    fine = 2.0 ** -(bits - 1 + m)
    p = torch.tensor([0.0, 0.4 * fine, 0.6 * fine, 7 * fine, 7.49 * fine, 7.5 * fine, 0.3, 0.99], dtype=torch.float64)
    got = (twin_quant(p, torch.tensor(fine, dtype=torch.float64), bits, m, False) / fine).tolist()
    assert got == [0, 0, 1, 7, 7, 8, 8 * round(0.3 * 8), 56]  # 7.5 steps go coarse: round(7.5 / 8) = 1 coarse step


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_gelu_ratio_is_the_widest_that_still_covers_the_negative_range(bits):
    for coarse, negative in ((1.0, 0.17), (0.05, 0.17), (3.0, 0.001), (0.3, 0.3)):
        m = gelu_twin_m(torch.tensor(coarse), negative, bits)
        covered = lambda k: coarse / 2.0**k * 2 ** (bits - 1) >= negative  # noqa: E731
        assert 1 <= m <= max_twin_m(bits)
        assert m == 1 or covered(m)
        assert m == max_twin_m(bits) or not covered(m + 1)


def test_w4a4_program_is_bit_exact_with_twin_softmax_and_twin_gelu(ptq4vit_w4a4, fmnist_test):
    program = ptq4vit_w4a4.export()
    softmax = [op for op in program.ops if op.kind == "Softmax"]
    assert len(softmax) == 6 and all(op.attrs.get("twin_m", 0) >= 1 for op in softmax)
    fc2_in = [op for op in program.ops if op.kind == "Requant" and op.name.endswith("fc2.in.requant")]
    assert len(fc2_in) == 6 and all(op.attrs.get("twin_m", 0) >= 1 for op in fc2_in)
    for op in program.ops:
        if op.name.endswith(("matmul_av", "fc2")):
            assert op.attrs.get("a_twin_m") == program.ops[[o.outputs[0] for o in program.ops].index(op.inputs[0])].attrs["twin_m"]
    assert_exact(ptq4vit_w4a4, program, fmnist_test[0][:4])

"""RepQ-ViT (quant/methods/repq.py): the post-LayerNorm re-parameterisation, the log-sqrt(2) softmax quantizer and the
zero point a LayerNorm output then carries, each where a plausible bug would show."""
from __future__ import annotations

import numpy as np
import torch

from hwsim.ops.gemm_ops import decode_log_sqrt2, log_decode_exp
from models.data import calibration_data
from quant.graph.capture import capture
from quant.graph.norm_linear import channel_ranges, norm_linear_pairs
from quant.methods.repq import RepQViT
from quant.quantizer import log2_codes, log2_values
from tests.quant.test_architectures import assert_exact


def test_reparameterisation_keeps_the_float_model_and_gives_every_channel_one_range(deit_fmnist):
    """A wrong fold (a sign, the bias term, r applied on the wrong side) changes the float output or leaves the
    channel ranges unequal."""
    calib = calibration_data("fmnist", deit_fmnist, 32, seed=0)
    captured = capture(deit_fmnist, tuple(calib.shape[1:]))
    with torch.no_grad():
        before = captured.gm(calib).double()
    RepQViT().prepare(captured, calib)
    with torch.no_grad():
        after = captured.gm(calib).double()
    assert torch.allclose(before, after, atol=2e-4 * before.abs().max())
    pairs = norm_linear_pairs(captured)
    assert len(pairs) == 2 * 6 + 1  # norm1 -> qkv, norm2 -> fc1 in each of the 6 blocks, the final norm -> head
    for name, r in channel_ranges(captured, [p.norm for p in pairs], calib).items():
        width = r.hi - r.lo
        assert torch.allclose(width, width.mean().expand_as(width), rtol=1e-3), name
        assert torch.allclose(r.lo, r.lo.mean().expand_as(r.lo), atol=1e-3 * float(width.mean())), name


def test_log_sqrt2_fake_quant_values_are_the_integer_decode():
    """Fake-quant and the integer MatMul must mean the same value by every code, or they disagree on images."""
    for bits in (2, 3, 4):
        codes = torch.arange(2**bits)
        values = log2_values(codes, bits, sqrt2=True).numpy()
        decoded = decode_log_sqrt2(codes.numpy(), bits) * 2.0 ** log_decode_exp(bits, True)
        assert np.array_equal(values, decoded), bits


def test_log_sqrt2_codes_round_half_octaves():
    p = torch.tensor([1.0, 0.85, 0.84, 0.6, 0.59, 2.0**-7, 2.0**-7.3, 0.0])
    assert log2_codes(p, 4, sqrt2=True).tolist() == [0, 0, 1, 1, 2, 14, 15, 15]


def test_w4a4_program_is_bit_exact_with_layernorm_zero_points_and_log_sqrt2_attention(repq_w4a4, fmnist_test):
    program = repq_w4a4.export()
    norms = [op for op in program.ops if op.kind == "LayerNorm" and op.name.endswith(("norm1", "norm2"))]
    assert len(norms) == 12 and sum(program.tensors[op.outputs[0]].zero_point != 0 for op in norms) >= 4
    softmax = [op for op in program.ops if op.kind == "Softmax"]
    assert softmax and all(op.attrs.get("sqrt2") for op in softmax)
    assert all(op.attrs.get("a_sqrt2") for op in program.ops if op.name.endswith("matmul_av"))
    assert_exact(repq_w4a4, program, fmnist_test[0][:4])


def test_the_softmax_code_width_follows_the_activation_bits_up_to_four():
    m = RepQViT()
    assert [m.softmax_code_bits(b) for b in (3, 4, 6, 8)] == [3, 4, 4, 4]

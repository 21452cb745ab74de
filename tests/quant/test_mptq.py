"""MPTQ-ViT (quant/methods/mptq.py): SQ-b leaves the float model unchanged while centring and balancing the
LayerNorm outputs against the next Linear's weights; OPT-m picks the post-GELU ratio by the output error; the W4A4
program runs its twin codes bit-exact."""
from __future__ import annotations

import pytest
import torch

from quant.graph.capture import capture
from quant.graph.norm_linear import channel_ranges, norm_linear_pairs
from quant.methods.mptq import MPTQViT
from tests.quant.test_architectures import assert_exact


@pytest.mark.parametrize("pot", [False, True])
def test_sqb_keeps_the_float_model_and_centres_and_balances_the_channels(deit_fmnist, fmnist_test, pot):
    """A fold with the shift's sign or the factor's direction wrong changes the float outputs, or leaves the channels
    off-centre, or unbalanced against the weights (at alpha = 0.5 max|X'_j| = max|W'_:,j|)."""
    images = torch.from_numpy(fmnist_test[0][:16])
    captured = capture(deit_fmnist, tuple(images.shape[1:]))
    with torch.no_grad():
        before = captured.gm(images).double()
        MPTQViT(pot_smoothing=pot).prepare(captured, images)
        after = captured.gm(images).double()
    assert torch.allclose(before, after, atol=1e-3 * before.abs().max())
    pairs = norm_linear_pairs(captured)
    assert len(pairs) == 13  # six blocks x (qkv, fc1), and the final norm -> head
    ranges = channel_ranges(captured, [p.norm for p in pairs], images)
    for pair in pairs:
        lo, hi = ranges[pair.norm].lo, ranges[pair.norm].hi
        assert ((hi + lo).abs() / (hi - lo)).max() < 1e-3, pair.norm           # centred on the calibration range
        w_max = captured.gm.get_submodule(pair.linear).weight.double().abs().amax(0)
        ratio = hi / w_max
        if pot:  # eps rounded to a power of two: balanced within a factor 2
            assert ratio.min() > 0.5 ** 2 and ratio.max() < 2.0 ** 2, pair.norm
        else:
            assert torch.allclose(ratio, torch.ones_like(ratio), rtol=1e-3), pair.norm


def _gelu_site(x: torch.Tensor, bits: int):
    """A post-GELU site read by an identity Linear, for OPT-m alone (quant.methods.mptq.MPTQViT._opt_m_gelu)."""
    from types import SimpleNamespace

    from quant.layer_records import LinearRecord

    n = x.shape[1]
    site = SimpleNamespace(bits=bits, twin_m=1, scale=torch.tensor(float(x.max()) / (2 ** (bits - 1) - 1) / 2))
    site.set_format = lambda scale, zero_point, signed: setattr(site, "scale", scale)
    weight = torch.eye(n, dtype=torch.float64)
    module = SimpleNamespace(weight=weight, bias=None, wq=SimpleNamespace(scale=torch.full((n,), 2.0 ** -8), bits=8))
    return SimpleNamespace(inputs=[site], module=module), site, LinearRecord(x, x @ weight.t(), None)


@pytest.mark.parametrize("bits", [4, 6])
def test_opt_m_narrows_the_ratio_when_the_negative_region_carries_weight(bits):
    """OPT-m trades the fine region's reach against its resolution by the output error: GELU inputs whose negative
    tail reaches -1.5 need a small ratio (R1 must reach it); a tail that stops at -0.05 takes a wide one."""
    torch.manual_seed(0)
    picks = {}
    for reach in (0.05, 1.5):
        x = torch.cat([torch.rand(2048, 8) * 4, -torch.rand(2048, 8) * reach]).double()
        g, site, rec = _gelu_site(x, bits)
        MPTQViT()._opt_m_gelu(g, rec)
        picks[reach] = site.twin_m
        assert float(site.scale) * 2 ** (bits - 1) * 2.0 ** site.twin_m >= 0.5 * 4  # coarse region reaches the top
    assert picks[1.5] < picks[0.05], picks
    assert float(2.0 ** -picks[1.5]) * 2 ** (bits - 1) * 4 / (2 ** (bits - 1) - 1) >= 0.75  # R1 reaches most of -1.5


def test_w4a4_program_carries_twin_codes_and_is_bit_exact(mptq_w4a4, fmnist_test):
    program = mptq_w4a4.export()
    assert all(op.attrs.get("twin_m", 0) >= 1 for op in program.ops if op.kind == "Softmax")
    fc2_in = [op for op in program.ops if op.kind == "Requant" and op.name.endswith("fc2.in.requant")]
    assert len(fc2_in) == 6 and all(op.attrs.get("twin_m", 0) >= 1 for op in fc2_in)
    assert_exact(mptq_w4a4, program, fmnist_test[0][:4])

"""Quantizer parts against hand-computed values and exhaustive 4-bit grids."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from quant.parts import (QuantError, absmax_scale, check_bits, dyadic, fake_quant, is_pot,
                         pot_ceil_exp, pot_floor_exp, qrange, quantize, round_half_up)
from quant.presets import list_presets, preset
from quant.scales import Requant, Scale


def test_round_half_up_differs_from_torch_round_exactly_where_expected():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, -0.51])
    assert round_half_up(x).tolist() == [1, 2, 3, 0, -1, -2, 0, -1]
    assert torch.round(x).tolist() == [0, 2, 2, -0, -2, -2, 0, -1]  # half to even: not our convention


def test_quantize_by_hand():
    x = torch.tensor([0.3, -0.3, 0.75, 10.0, -10.0])
    assert quantize(x, torch.tensor(0.25), 4, True).tolist() == [1, -1, 3, 7, -8]  # 1.2, -1.2, 3 (exact), clamp, clamp
    assert quantize(x, torch.tensor(0.25), 4, False).tolist() == [1, 0, 3, 15, 0]
    assert fake_quant(torch.tensor([0.37]), torch.tensor(0.25), 8, True).tolist() == [0.25]  # 1.48 -> 1


def test_qrange_and_absmax_scale():
    assert qrange(4, True) == (-8, 7) and qrange(4, False) == (0, 15) and qrange(8, True) == (-128, 127)
    assert float(absmax_scale(torch.tensor(7.0), 4, True)) == 1.0
    assert float(absmax_scale(torch.tensor(15.0), 4, False)) == 1.0


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("signed", [True, False])
def test_quantize_exhaustive_grid_is_identity_on_codes(bits, signed):
    lo, hi = qrange(bits, signed)
    for exp in range(-4, 3):
        scale = torch.tensor(2.0**exp, dtype=torch.float64)
        codes = torch.arange(lo, hi + 1, dtype=torch.float64)
        assert torch.equal(quantize(codes * scale, scale, bits, signed), codes)
        # midpoints round up (half up), one code higher
        mids = (codes[:-1] + 0.5) * scale
        assert torch.equal(quantize(mids, scale, bits, signed), codes[1:])


def test_pot_helpers():
    assert int(pot_floor_exp(torch.tensor(0.3))) == -2
    assert int(pot_ceil_exp(torch.tensor(1.0), 8, True)) == -6  # 1/127 -> 2^-6.99 -> -6
    assert is_pot(torch.tensor([0.25, 4.0])) and not is_pot(torch.tensor([0.3]))


def test_dyadic_by_hand_and_property():
    d = dyadic(0.75)
    assert d.multiplier == 3 << 29 and d.shift == 31  # 0.75 = 0.75 * 2^0 -> m = 0.75 * 2^31
    rng = np.random.default_rng(0)
    for r in rng.uniform(1e-6, 100, 500):
        d = dyadic(float(r))
        assert 2**30 <= d.multiplier < 2**31
        assert abs(d.multiplier / 2**d.shift - r) <= r * 2**-30
    with pytest.raises(QuantError):
        dyadic(float("nan"))


@pytest.mark.parametrize("bad", [0, 1, 33, 2.5, "8", True])
def test_check_bits_rejects_impossible_widths(bad):
    with pytest.raises(QuantError):
        check_bits(bad, "wbits", 2, 16)


def test_requant_shift_matches_integer_formula_exhaustively():
    acc = torch.arange(-4096, 4096, dtype=torch.float64)[None]
    for s in range(-2, 8):
        rq = Requant.between(Scale(torch.tensor(2.0**-s)), Scale(torch.tensor(1.0)), 8, True)  # acc * 2^-s
        assert rq.mode == "shift" and int(rq.shift) == s
        ints = acc.long()
        ref = ((ints + (1 << (s - 1))) >> s) if s > 0 else ints << -s
        assert torch.equal(rq(acc), torch.clamp(ref, -128, 127).double())


@pytest.mark.parametrize("zero_point", [-8, -7, 0, 3])
def test_requant_zero_point_is_added_after_rounding_then_clamped(zero_point):
    acc = torch.arange(-300, 300, dtype=torch.float64)[None]
    rq = Requant.between(Scale(torch.tensor(2.0**-4)), Scale(torch.tensor(1.0)), 4, True, zero_point)
    ref = torch.clamp(((acc.long() + 8) >> 4) + zero_point, -8, 7)
    assert torch.equal(rq(acc), ref.double())


def test_requant_dyadic_for_float_scales():
    rq = Requant.between(Scale(torch.tensor(0.3)), Scale(torch.tensor(0.7)), 8, True)
    assert rq.mode == "dyadic"
    acc = torch.arange(-300, 300, dtype=torch.float64)[None]
    m, s = int(rq.multiplier), int(rq.shift)
    ref = torch.div(acc.long() * m + (1 << (s - 1)), 1 << s, rounding_mode="floor").clamp(-128, 127)
    assert torch.equal(rq(acc), ref.double())
    assert torch.allclose(rq(acc), torch.clamp(torch.floor(acc * 0.3 / 0.7 + 0.5), -128, 127), atol=1)


def test_presets_parse_and_register():
    spec = preset("Int4WeightPerChannelPoT")
    assert (spec.bits, spec.signed, spec.granularity, spec.pot) == (4, True, "PerChannel", True)
    assert preset("UInt4SoftmaxPerTensorLog2").scale_form == "Log2"
    assert preset("Int6ActPerTensorFloat").bits == 6
    assert "Int8ActPerHeadPoT" in list_presets()
    for bad in ("Int1WeightPerChannelPoT", "Int33ActPerTensorPoT", "Int8Banana", "UInt8SoftmaxPerTensorLog2"):
        with pytest.raises(QuantError):
            preset(bad)

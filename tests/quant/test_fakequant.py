"""The fused fake-quant node (quant.fakequant._FakeQuant) against the same expression written with straight-through
rounding and left to autograd: equal values, and equal gradients for the input and for an LSQ scale (per tensor,
per channel, broadcast over a conv's spatial axes, with and without a zero point). A hand-written backward that
dropped the clipping mask or the -x/s term of LSQ would differ."""
from __future__ import annotations

import pytest
import torch

from quant.fakequant import fake_quant_ste, round_ste
from quant.parts import qrange


def _written_out(x, scale, bits, signed, zero):
    lo, hi = qrange(bits, signed)
    return (torch.clamp(round_ste(x / scale) + zero, lo, hi) - zero) * scale


@pytest.mark.parametrize("shape,scale_shape", [((5, 7, 6), ()), ((5, 7, 6), (6,)), ((4, 3, 5, 5), (3, 1, 1))])
@pytest.mark.parametrize("bits,signed,zero", [(4, True, 0), (4, True, 3), (3, False, 0), (8, True, -5)])
def test_fused_fake_quant_has_the_straight_through_gradients(shape, scale_shape, bits, signed, zero):
    torch.manual_seed(bits + zero)
    x = (torch.randn(shape, dtype=torch.float64) * 2 ** (bits - 1)).requires_grad_()
    scale = (torch.rand(scale_shape, dtype=torch.float64) + 0.2).requires_grad_()
    upstream = torch.randn(shape, dtype=torch.float64)
    fused = fake_quant_ste(x, scale, bits, signed, zero)
    written = _written_out(x, scale, bits, signed, zero)
    assert torch.equal(fused, written)
    for a, b in zip(torch.autograd.grad((fused * upstream).sum(), (x, scale)),
                    torch.autograd.grad((written * upstream).sum(), (x, scale))):
        assert torch.allclose(a, b, atol=1e-12)
    clipped = (torch.floor(x / scale + 0.5) + zero > qrange(bits, signed)[1]).any()
    assert clipped  # the data reach the clipping range, so the mask is exercised


@pytest.mark.parametrize("scale_shape", [(), (6,)])
@pytest.mark.parametrize("bits,signed,zero", [(4, True, 3), (3, False, 0), (8, True, -5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inference_fake_quant_equals_the_training_node(scale_shape, bits, signed, zero, dtype):
    """Evaluation takes an in-place path without the backward masks; it must give the training node's values bit for
    bit (ties at half a step included, where a different rounding would differ), and leave its input alone."""
    torch.manual_seed(bits)
    scale = torch.rand(scale_shape, dtype=dtype) + 0.2
    x = torch.randn(5, 7, 6, dtype=dtype) * 2 ** (bits - 1)
    x[0] = (torch.arange(-21, 21, dtype=dtype).reshape(7, 6) + 0.5) * scale  # exact ties, inside and beyond range
    before = x.clone()
    with torch.no_grad():
        fast = fake_quant_ste(x, scale, bits, signed, zero)
    trained = fake_quant_ste(x.clone().requires_grad_(), scale, bits, signed, zero).detach()
    assert torch.equal(x, before)
    assert torch.equal(fast, trained) and fast.dtype == trained.dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,scale_shape", [((5, 7, 6), ()), ((5, 7, 6), (6,)), ((4, 3, 5, 5), (3, 1, 1)),
                                               ((2, 4, 3, 3), (4, 1, 1))])
def test_numba_forward_is_bit_identical_to_torch(dtype, shape, scale_shape):
    """The one-loop forward (quant.fakequant_kernel) must give torch's values bit for bit, in float32 too (where
    x / s + 1/2 rounds in single precision), or reconstruction and QAT would drift from the expression they train."""
    from quant.fakequant_kernel import fused_forward

    torch.manual_seed(len(shape) + len(scale_shape))
    x = torch.randn(shape, dtype=dtype) * 9
    x.view(-1)[:5] = torch.tensor([0.5, -0.5, 1.5, 2.5, -3.5], dtype=dtype) * 0.25  # exact ties at scale 0.25
    scale = (torch.rand(scale_shape, dtype=dtype) + 0.2) if scale_shape else torch.tensor(0.25, dtype=dtype)
    for zero in (0, 2.0):
        out, v, q, inside = fused_forward(x, scale, -4, 3, zero)
        v_t = x / scale
        codes = torch.floor(v_t + 0.5) + zero
        assert torch.equal(v, v_t) and torch.equal(inside, (codes >= -4) & (codes <= 3))
        assert torch.equal(q, codes.clamp(-4, 3) - zero) and torch.equal(out, q * scale)

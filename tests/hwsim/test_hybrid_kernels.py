"""The integer ops of hybrid models (hwsim.ops.hybrid_ops, grouped Conv2d, Sub) against the independent int64
references: exhaustive where the operands are narrow, hypothesis where they are wide, and against float where the
integer algorithm is exact by design (Hardswish, ReLU, convolutions) or close to it (SiLU, pooling)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hwsim.ir import Op, Program, TensorSpec, validate
from hwsim.kernels.activations import hardswish_int, relu_int, silu_int
from hwsim.kernels.gemm import gemm
from hwsim.kernels.mul import mul_int
from hwsim.kernels.pool import avgpool_int, reciprocals
from hwsim.kernels.requant import add_aligned
from hwsim.ops import OPS
from hwsim.reference import ops as R

I32 = (-2**31, 2**31 - 1)
I4 = np.arange(-8, 8)


def _program(kind: str, inputs: dict[str, TensorSpec], out: TensorSpec, attrs: dict, params: dict | None = None,
             constants: dict | None = None, check: bool = True) -> Program:
    """A one-op program; ``check=False`` skips whole-program validation (an input with a zero point, which only a
    Requant may produce in a real program) and checks the op alone."""
    tensors = {**inputs, "y": out}
    for name, values in (constants or {}).items():
        width = max(int(np.abs(values).max(initial=0)).bit_length() + 1, 2)  # the narrowest signed width
        tensors[name] = TensorSpec(values.shape, width, True, constant=True)
    names = [n for n in inputs]
    p = Program("one", [n for n in names if not inputs[n].constant], ["y"], tensors,
                [Op(kind, "op", tuple(names), ("y",), dict(params or {}), attrs)], dict(constants or {}), {})
    if check:
        validate(p)
    else:
        OPS[kind].check(p.ops[0], p, [inputs[n].shape for n in names])
    return p


def _run_both(p: Program, *args: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    (out,), sat = OPS[p.ops[0].kind].run(p.ops[0], p, list(args))
    ref = OPS[p.ops[0].kind].reference(p.ops[0], p, [a.astype(np.int64) for a in args])
    return out, sat, ref


# --- SiLU ------------------------------------------------------------------------------------------------------------
def test_silu_exhaustive_12bit_against_reference_and_float():
    x = np.arange(-2**11, 2**11, dtype=np.int64)
    for frac in (0, 3, 6, 9):
        out = np.empty_like(x)
        assert silu_int(x, frac, 8, *I32, out) == 0
        assert np.array_equal(out, R.silu(x, frac, 8)), frac
        if frac >= 3:  # with fewer fractional bits the shift exponential of I-ViT is too coarse near zero
            xf = torch.from_numpy(x / 2.0**frac)
            assert np.abs(out / 2.0 ** (frac + 8) - F.silu(xf).numpy()).max() < 0.045, frac


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int64, (40,), elements=st.integers(-2**15, 2**15 - 1)), st.integers(0, 14), st.integers(1, 12))
def test_silu_random_wide(x, frac, sig):
    out = np.empty_like(x)
    silu_int(x, frac, sig, *I32, out)
    assert np.array_equal(out, R.silu(x, frac, sig))


def test_silu_op_saturates_and_counts():
    x = np.arange(-2**15, 2**15, 97, dtype=np.int32).reshape(1, -1)
    p = _program("SiLU", {"x": TensorSpec(x.shape[1:], 16, True, exp=-4)}, TensorSpec(x.shape[1:], 20, True),
                 {"frac_bits": 4, "sig_bits": 8})
    out, sat, ref = _run_both(p, x)
    wide = R.silu(x, 4, 8)
    assert np.array_equal(out, ref) and sat == int(((wide < -2**19) | (wide >= 2**19)).sum()) > 0


# --- Hardswish -------------------------------------------------------------------------------------------------------
def test_hardswish_exhaustive_12bit_equals_float():
    """x * clip(x + 3, 0, 6) is exact on integers: the value times 2^-2f / 6 is torch's hardswish of x 2^-f."""
    x = np.arange(-2**11, 2**11, dtype=np.int64)
    for frac in (0, 2, 5, 8):
        out = np.empty_like(x)
        assert hardswish_int(x, frac, *I32, out) == 0
        assert np.array_equal(out, R.hardswish(x, frac)), frac
        expected = F.hardswish(torch.from_numpy(x / 2.0**frac)).numpy()
        assert np.allclose(out * 2.0 ** (-2 * frac) / 6, expected, rtol=1e-12, atol=1e-12), frac


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int64, (40,), elements=st.integers(-2**15, 2**15 - 1)), st.integers(0, 14), st.integers(8, 32))
def test_hardswish_random_wide_with_saturation(x, frac, bits):
    out = np.empty_like(x)
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    sat = hardswish_int(x, frac, lo, hi, out)
    ref, ref_sat = R.saturate(R.hardswish(x, frac), bits, True)
    assert np.array_equal(out, ref) and sat == ref_sat


# --- ReLU ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signed,zero", [(True, 0), (True, -3), (False, 5), (False, 0)])
def test_relu_exhaustive_4bit_codes_with_zero_points(signed, zero):
    codes = np.arange(-8, 8) if signed else np.arange(16)
    x = codes.reshape(1, -1).astype(np.int32)
    spec = TensorSpec((16,), 4, signed, zero_point=zero, exp=0)
    p = _program("ReLU", {"x": spec}, spec, {}, check=False)
    out, _, ref = _run_both(p, x)
    # real value (c - z) * s: ReLU keeps c where c >= z, else the code of zero, z
    assert out.tolist() == ref.tolist() == [[c if c >= zero else zero for c in codes]]


def test_relu_kernel_on_an_accumulator():
    x = np.array([-2**31, -1, 0, 1, 2**31 - 1], dtype=np.int64)
    out = np.empty_like(x)
    relu_int(x, 0, out)
    assert out.tolist() == [0, 0, 0, 1, 2**31 - 1]


# --- AvgPool2d -------------------------------------------------------------------------------------------------------
def test_avgpool_every_2x2_window_of_4bit_codes():
    """All 16^4 windows of int4 codes (as one map of 2x2 windows, stride 2): the kernel equals the reference, and
    2^F * mean to within half a step plus the 16-bit reciprocal's error."""
    windows = np.array(list(itertools.product(I4, repeat=4)), dtype=np.int64)      # [65536, 4]
    x = windows.reshape(256, 256, 2, 2).transpose(0, 2, 1, 3).reshape(1, 1, 512, 512)
    for frac in (0, 8):
        out = np.empty((1, 1, 256, 256), dtype=np.int64)
        avgpool_int(x, 2, 2, 0, True, 0, reciprocals(4, frac), out)
        assert np.array_equal(out, R.avgpool2d(x, 2, 2, 0, True, 0, frac))
        mean = torch.nn.functional.avg_pool2d(torch.from_numpy(x).double(), 2).numpy()
        assert np.abs(out / 2.0**frac - mean).max() <= 0.5 / 2**frac + 1e-3


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3), st.integers(0, 1), st.booleans(), st.integers(-20, 20), st.integers(0, 12),
       st.integers(4, 9), st.integers(4, 9), st.integers(0, 2**32))
def test_avgpool_op_random_maps(kernel, stride_extra, include_pad, zero, frac, h, w, seed):
    """Padded windows (count with or without the padding, as torch), strides, zero points, 16-bit codes."""
    stride = 1 + stride_extra
    pad = kernel // 2
    rng = np.random.default_rng(seed)
    x = rng.integers(-2**15, 2**15, (2, 3, h, w)).astype(np.int32)
    ho, wo = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    p = _program("AvgPool2d", {"x": TensorSpec((3, h, w), 16, True, zero_point=zero, exp=0)},
                 TensorSpec((3, ho, wo), 32, True),
                 {"kernel": kernel, "stride": stride, "padding": pad, "count_include_pad": include_pad,
                  "frac_bits": frac}, check=False)
    out, sat, ref = _run_both(p, x)
    assert np.array_equal(out, ref) and sat == 0
    mean = F.avg_pool2d(torch.from_numpy(x - zero).double(), kernel, stride, pad,
                        count_include_pad=include_pad).numpy()
    assert np.abs(out / 2.0**frac - mean).max() <= 0.5 / 2**frac + 2**15 * 2.0**-16 + 1e-9


# --- Mul -------------------------------------------------------------------------------------------------------------
def test_mul_exhaustive_4bit_with_zero_points_and_saturation():
    a, b = (v.astype(np.int64).ravel() for v in np.meshgrid(I4, np.arange(16)))
    for za, zb, bits in ((0, 0, 32), (3, 7, 32), (-2, 0, 6)):
        out = np.empty(a.shape, dtype=np.int64)
        sat = mul_int(a, b, za, zb, -2 ** (bits - 1), 2 ** (bits - 1) - 1, out)
        ref, ref_sat = R.saturate((a - za) * (b - zb), bits, True)
        assert np.array_equal(out, ref) and sat == ref_sat, (za, zb, bits)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**32))
def test_mul_op_broadcasts_a_per_channel_constant(c, hw, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2**15, 2**15, (2, c, hw, hw)).astype(np.int32)
    gamma = rng.integers(-128, 128, (c, 1, 1))
    p = _program("Mul", {"x": TensorSpec((c, hw, hw), 16, True, exp=-3),
                         "g": TensorSpec((c, 1, 1), 8, True, constant=True)},
                 TensorSpec((c, hw, hw), 32, True), {}, constants={"g": gamma})
    out, sat, ref = _run_both(p, x, gamma[None])
    assert np.array_equal(out, ref) and np.array_equal(out, x * gamma[None]) and sat == 0


# --- Sub (Add with subtract) ------------------------------------------------------------------------------------------
def test_subtract_exhaustive_4bit():
    a, b = (v.astype(np.int64).ravel() for v in np.meshgrid(I4, I4))
    for sa, sb in itertools.product(range(-2, 3), repeat=2):
        out = np.empty(a.shape, dtype=np.int32)
        sat = add_aligned(a, b, sa, sb, -8, 7, out, -1)
        ref, ref_sat = R.saturate(R.round_shift(a, sa) - R.round_shift(b, sb), 4, True)
        assert np.array_equal(out, ref) and sat == ref_sat
        assert np.array_equal(R.add(a, b, sa, sb, 4, subtract=True), ref)


# --- grouped and zero-point convolutions ------------------------------------------------------------------------------
def test_gemm_bias_per_group():
    rng = np.random.default_rng(0)
    a, b = rng.integers(-8, 8, (3, 5, 7)), rng.integers(-8, 8, (3, 4, 7))
    bias = rng.integers(-100, 100, (3, 4))
    out, _ = gemm(a, b, bias)
    assert np.array_equal(out, np.einsum("gmk,gnk->gmn", a, b) + bias[:, None, :])
    shared, _ = gemm(a, b, bias[0])
    assert np.array_equal(shared, np.einsum("gmk,gnk->gmn", a, b) + bias[0])


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(1, 4, 6), (2, 4, 6), (4, 4, 4), (4, 4, 8), (3, 6, 9)]), st.sampled_from([1, 3]),
       st.integers(1, 2), st.integers(0, 1), st.integers(-4, 4), st.integers(4, 8), st.integers(0, 2**32))
def test_conv_op_groups_and_input_zero_point(shape, k, stride, pad_extra, zero, size, seed):
    """Grouped and depthwise convolutions with an input zero point: hwsim's GEMM path equals the direct reference,
    and (x - z) convolved by torch with zero padding, once -z * sum(W) is in the bias as the lowering puts it."""
    groups, c, o = shape
    pad = (k // 2) * pad_extra
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (2, c, size, size)).astype(np.int32)   # uint8 codes with a zero point
    w = rng.integers(-128, 128, (o, c // groups, k, k))
    bias = rng.integers(-1000, 1000, o)
    folded = bias - zero * w.reshape(o, -1).sum(1)
    ho = (size + 2 * pad - k) // stride + 1
    p = _program("Conv2d", {"x": TensorSpec((c, size, size), 8, False, zero_point=zero, exp=0)},
                 TensorSpec((o, ho, ho), 32, True),
                 {"stride": stride, "padding": pad, "groups": groups}, {"weight": "w", "bias": "b"},
                 {"w": w, "b": folded}, check=False)
    out, sat, ref = _run_both(p, x)
    expected = F.conv2d(torch.from_numpy(x - zero).double(), torch.from_numpy(w).double(),
                        torch.from_numpy(bias).double(), stride, pad, 1, groups).numpy()
    assert np.array_equal(out, ref) and np.array_equal(out, expected) and sat == 0


def test_conv_check_names_a_bad_group_count():
    p = _program("Conv2d", {"x": TensorSpec((4, 5, 5), 8, True, exp=0)}, TensorSpec((6, 5, 5), 32, True),
                 {"padding": 1, "groups": 2}, {"weight": "w"}, {"w": np.zeros((6, 2, 3, 3), np.int64)})
    p.ops[0].attrs["groups"] = 3
    with pytest.raises(ValueError, match="groups 3 must divide"):
        validate(p)

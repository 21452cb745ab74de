"""Every numba kernel against the independent int64 references: exhaustive for narrow operands, hypothesis for wide."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hwsim.ir import Op, Program, TensorSpec, validate
from hwsim.kernels.gelu import gelu_int
from hwsim.kernels.gemm import gemm, pack_b
from hwsim.kernels.layernorm import isqrt, layernorm_int
from hwsim.kernels.reduce import sum_rows
from hwsim.kernels.requant import add_aligned, requant_dyadic, requant_shift
from hwsim.kernels.softmax import LOG2, LOG_SQRT2, UNIFORM, bit_length, log2_code, log_sqrt2_code, softmax_int
from hwsim.ops import OPS
from hwsim.ops.gemm_ops import decode_log2, decode_log_sqrt2, im2col
from hwsim.reference import ops as R

I4 = np.arange(-8, 8)
U4 = np.arange(0, 16)


def test_round_shift_convention_by_hand():
    # docs/numerics.md: (x + 2^(s-1)) >> s, round half up, arithmetic shift; s <= 0 is a left shift.
    x = np.array([[5, 6, 7, -5, -6, -7, 2, -2]], dtype=np.int64)
    out = np.empty_like(x, dtype=np.int32)
    requant_shift(x, np.array([2]), -128, 127, out)
    assert out.tolist() == [[1, 2, 2, -1, -1, -2, 1, 0]]  # 1.25, 1.5, 1.75, -1.25, -1.5 -> -1 (half up), -1.75, .5, -.5 -> 0
    requant_shift(x, np.array([-1]), -128, 127, out)
    assert out.tolist() == [[10, 12, 14, -10, -12, -14, 4, -4]]


@pytest.mark.parametrize("bits,signed", [(4, True), (4, False), (8, True), (2, True)])
def test_requant_shift_exhaustive(bits, signed):
    x = np.arange(-2**12, 2**12, dtype=np.int64)[None, :].repeat(12, 0)
    shifts = np.arange(-3, 9, dtype=np.int64)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    for s in shifts:
        out = np.empty(x[:1].shape, dtype=np.int32)
        sat = requant_shift(x[:1], np.array([s]), lo, hi, out)
        ref, ref_sat = R.saturate(R.round_shift(x[:1], s), bits, signed)
        assert np.array_equal(out, ref) and sat == ref_sat


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(0, 2**32))
def test_requant_shift_along_rows_is_per_channel_on_an_inner_axis(batch, heads, inner, seed):
    # [B, H, inner] with one shift per head (-3..12): rows of the [B * H, inner] view cycle through the heads
    rng = np.random.default_rng(seed)
    x = rng.integers(-2**20, 2**20, (batch, heads, inner))
    shift = rng.integers(-3, 13, heads)
    out = np.empty((batch * heads, inner), dtype=np.int32)
    sat = requant_shift(x.reshape(batch * heads, inner), np.resize(shift, batch * heads), -128, 127, out, True)
    ref, ref_sat = R.saturate(R.round_shift(x, shift[None, :, None]), 8, True)
    assert np.array_equal(out.reshape(x.shape), ref) and sat == ref_sat


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int64, (3, 7), elements=st.integers(-2**31, 2**31 - 1)),
       hnp.arrays(np.int64, (7,), elements=st.integers(2**30, 2**31 - 1)),
       hnp.arrays(np.int64, (7,), elements=st.integers(1, 62)))
def test_requant_dyadic_matches_reference(x, m, s):
    out = np.empty(x.shape, dtype=np.int32)
    requant_dyadic(x, m, s, -128, 127, out)
    assert np.array_equal(out, R.requant_dyadic(x, m, s, 8, True))


def test_requant_dyadic_by_hand():
    # 100 * 0.75 = 75 exactly; 0.75 = 3 * 2^30 / 2^32.
    out = np.empty((1, 2), dtype=np.int32)
    requant_dyadic(np.array([[100, -3]]), np.array([3 << 30]), np.array([32]), -128, 127, out)
    assert out.tolist() == [[75, -2]]  # -2.25 -> -2


def test_gemm_exhaustive_4bit_pairs():
    # every pair of int4 (and uint4) values as a K = 2 row against every int4 pair as a column: all 65 536 two-term
    # dot products, so the accumulation across K is covered, not one lane
    pairs = np.array(list(itertools.product(I4, I4)))
    upairs = np.array(list(itertools.product(U4, U4)))
    for lhs in (pairs, upairs):
        out, sat = gemm(lhs.reshape(1, 256, 2), pairs.reshape(1, 256, 2))
        assert sat == 0 and np.array_equal(out[0], R.matmul(lhs, pairs))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 19), st.integers(1, 70), st.integers(1, 40), st.booleans(), st.integers(0, 2**32))
def test_gemm_random_int8(g, m, k, n, with_bias, seed):
    # m and n straddle the micro-kernel's 4 x 16 tile (partial, overlapped and padded row blocks; partial panels), k odd/even
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (g, m, k))
    b = rng.integers(-128, 128, (g, n, k))
    bias = rng.integers(-2**20, 2**20, n) if with_bias else None
    out, sat = gemm(a, b, bias)
    assert sat == 0 and np.array_equal(out, R.matmul(a, b, bias))
    packed_out, _ = gemm(a, pack_b(b), bias)
    assert np.array_equal(packed_out, out)
    k_major_out, _ = gemm(a, pack_b(b.transpose(0, 2, 1).copy(), k_major=True), bias)
    assert np.array_equal(k_major_out, out)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), st.integers(1, 9), st.integers(1, 33), st.integers(0, 2**32))
def test_gemm_full_int16_range_stays_exact(k, m, n, seed):
    # K <= 2 keeps int16 x int16 sums inside int32 except the one pair (-2^15)^2 * 2, which must take the int64 path
    rng = np.random.default_rng(seed)
    a = rng.integers(-2**15, 2**15, (1, m, k))
    b = rng.integers(-2**15, 2**15, (1, n, k))
    a[0, 0, :], b[0, 0, :] = -2**15, -2**15
    out, sat = gemm(a, b)
    ref = R.matmul(a, b, None)
    assert np.array_equal(out, np.clip(ref, -2**31, 2**31 - 1)) and sat == int((ref > 2**31 - 1).sum())


def test_packed_b_unpacks_to_the_original():
    b = np.random.default_rng(1).integers(-128, 128, (2, 21, 37)).astype(np.int16)
    packed = pack_b(b)
    assert packed.panels.shape == (2, 2, 19, 32) and packed.max_abs == int(np.abs(b.astype(int)).max())
    assert np.array_equal(packed.unpack(), b)


def test_gemm_int64_path_and_saturation_are_counted():
    a = np.full((1, 3, 40000), 2**15 - 1)  # 40000 * 2^30: beyond int32, must not wrap
    b = np.full((1, 2, 40000), 2**15 - 1)
    out, sat = gemm(a, b)
    assert sat == 6 and (out == 2**31 - 1).all()
    out, sat = gemm(np.full((1, 1, 4), 100), np.full((1, 1, 4), 100), acc_bits=16)
    assert sat == 1 and out[0, 0, 0] == 2**15 - 1


def test_bit_length_matches_python():
    values = [0, 1, 2, 3, 255, 256, 2**31 - 1, 2**31, 2**62 + 5, 2**63 - 1]
    assert [bit_length(v) for v in values] == [v.bit_length() for v in values]


def test_log2_code_rounds_in_the_log_domain_by_hand():
    # p = e / 100 -> round(log2(1 / p)), with sqrt(2) ~ 181/128: p > 0.7072 -> 1, else down to p > 0.3536 -> 1/2, ...
    assert [log2_code(e, 100, 15) for e in (100, 71, 70, 51, 50, 36, 35, 0)] == [0, 0, 1, 1, 1, 1, 2, 15]
    assert log2_code(128, 181, 15) == 1 and log2_code(129, 181, 15) == 0  # the exact tie 181/128 rounds up
    assert log2_code(1, 2**20, 15) == 15  # 2^-20 is below the 4-bit range: the zero code


def test_log_sqrt2_code_rounds_half_octaves_by_hand():
    # p = e / 100 -> round(2 log2(1 / p)): the boundaries are p = 2^-0.25 = 0.8409, 2^-0.75 = 0.5946, 2^-1.25 = 0.4204
    got = [log_sqrt2_code(e, 100, 15) for e in (100, 85, 84, 60, 59, 43, 42, 0)]
    assert got == [0, 0, 1, 1, 2, 2, 3, 15]
    assert log_sqrt2_code(1, 2**8, 15) == 15 and log_sqrt2_code(1, 2**7, 15) == 14  # 2^-8 is code 16: out of range


def test_log_codes_exhaustive_against_counted_thresholds_and_float():
    """Every e <= S for S < 400: the kernel's leading-one codes equal the reference's threshold count, and equal
    round(q log2(S / e)) computed in float wherever S / e is not within 0.02 % of a rounding boundary."""
    for total in range(1, 400):
        e = np.arange(0, total + 1, dtype=np.int64)
        for mode, q, fn in ((LOG2, 1, log2_code), (LOG_SQRT2, 2, log_sqrt2_code)):
            got = np.array([fn(int(v), total, 15) for v in e])
            num, den = (total, e) if q == 1 else (total * total, e * e)
            counted = np.zeros(len(e), np.int64)
            for k in range(1, 16):
                counted += 128 * num >= 181 * den * (1 << (k - 1))
            counted = np.where(e == 0, 15, counted)
            assert np.array_equal(got, counted), (total, mode)
            with np.errstate(divide="ignore"):
                exact = q * np.log2(total / e[1:])
            off_tie = np.abs(exact - np.floor(exact) - 0.5) > 2e-4
            want = np.minimum(np.floor(exact + 0.5), 15)
            assert np.array_equal(got[1:][off_tie], want[off_tie]), (total, mode)


def test_softmax_exhaustive_small_rows():
    rows = np.array(list(itertools.product(I4, repeat=3)), dtype=np.int64)  # every int4 triple
    for frac in (0, 2, 3):
        for bits, mode in ((8, UNIFORM), (4, UNIFORM), (4, LOG2), (3, LOG2), (4, LOG_SQRT2), (3, LOG_SQRT2),
                           (2, LOG_SQRT2)):
            out = np.empty(rows.shape, dtype=np.int64)
            softmax_int(rows, frac, bits, mode, out)
            assert np.array_equal(out, R.softmax(rows, frac, bits, mode)), (frac, bits, mode)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 60)), elements=st.integers(-2**15, 2**15 - 1)),
       st.integers(0, 12), st.sampled_from([UNIFORM, LOG2, LOG_SQRT2]))
def test_softmax_random(x, frac, mode):
    bits = 8 if mode == UNIFORM else 4
    out = np.empty(x.shape, dtype=np.int64)
    softmax_int(x, frac, bits, mode, out)
    assert np.array_equal(out, R.softmax(x, frac, bits, mode))


@pytest.mark.parametrize("eta", [4, 41, 410, 4096])  # eta 0.001, 0.01, 0.1, 1.0 (I&S-ViT's grid ends)
def test_sulq_softmax_codes_are_the_log2_codes_of_p_plus_eta(eta):
    rows = np.array(list(itertools.product(I4, repeat=3)), dtype=np.int64)
    for frac, bits in ((0, 4), (2, 4), (3, 3)):
        out = np.empty(rows.shape, dtype=np.int64)
        softmax_int(rows, frac, bits, LOG2, out, eta)
        assert np.array_equal(out, R.softmax(rows, frac, bits, LOG2, eta)), (frac, bits)
    # eta shifts every probability up: codes never rise above the plain log2 codes, and p = 0 gets round(-log2 eta)
    plain, shifted = np.empty(rows.shape, dtype=np.int64), np.empty(rows.shape, dtype=np.int64)
    softmax_int(rows, 0, 4, LOG2, plain)
    softmax_int(rows, 0, 4, LOG2, shifted, eta)
    assert (shifted <= plain).all() and (shifted < plain).any()
    x = np.array([[0, -2**14]])  # the second probability is 0
    out = np.empty(x.shape, dtype=np.int64)
    softmax_int(x, 0, 4, LOG2, out, eta)
    assert out[0, 1] == min(15, int(np.floor(-np.log2(eta / 4096) + 0.5)) if eta < 4096 else 0)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 6), st.integers(2, 9)), elements=st.integers(0, 15)),
       hnp.arrays(np.int64, st.tuples(st.just(9), st.integers(1, 5)), elements=st.integers(-128, 127)),
       st.integers(1, 4096), st.sampled_from([3, 4]), st.booleans())
def test_sulq_matmul_subtracts_eta_times_the_column_sums(codes, v, eta, bits, transpose):
    from hwsim.ir.schema import Op
    from hwsim.ops.gemm_ops import reference_matmul, run_matmul

    codes = np.minimum(codes, 2**bits - 1)
    v = v[: codes.shape[1]]
    b = np.ascontiguousarray(v.T) if transpose else v
    op = Op("MatMul", "av", ("a", "b"), ("y",), attrs={"a_log2_bits": bits, "a_eta": eta, "transpose_b": transpose})
    (got,), sat = run_matmul(op, None, [codes[None], b[None]])
    want = reference_matmul(op, None, [codes[None], b[None]])
    assert sat == 0 and np.array_equal(got, want)
    t = max(2**bits - 2, 12)  # by hand: each value is (2^-c - eta) * 2^t
    values = np.where(codes == 2**bits - 1, 0.0, 2.0 ** -codes.astype(float)) - eta / 4096
    assert np.allclose(got[0] / 2.0**t, values @ v)


def test_log_sqrt2_softmax_of_4096_equal_logits_does_not_overflow():
    # p = 1/4096 = 2^-12: code 24 is beyond 4 bits (zero code); at 2^-3 (8 logits) the code is 6
    for n, want in ((4096, 15), (8, 6), (2, 2), (1, 0)):
        out = np.empty((1, n), dtype=np.int64)
        softmax_int(np.zeros((1, n), np.int64), 4, 4, LOG_SQRT2, out)
        assert (out == want).all(), n


def test_uniform_softmax_of_n_equal_logits_is_the_nearest_code_to_1_over_n():
    # a floored output fails this at n = 7 (256 / 7 = 36.57 -> 36); n = 1 saturates to 255 instead of wrapping to 256
    for n in range(1, 301):
        out = np.empty((1, n), dtype=np.int64)
        softmax_int(np.zeros((1, n), np.int64), 4, 8, UNIFORM, out)
        expected = min(256 / n, 255)
        assert np.all(np.abs(out - expected) <= 0.5), n


def test_softmax_is_close_to_float():
    rng = np.random.default_rng(0)
    x = rng.integers(-2000, 2000, (50, 64))
    out = np.empty(x.shape, dtype=np.int64)
    softmax_int(x, 8, 8, UNIFORM, out)
    e = np.exp(x / 256 - (x / 256).max(1, keepdims=True))
    assert np.abs(out / 256 - e / e.sum(1, keepdims=True)).max() < 0.03


def test_gelu_exhaustive_12bit():
    x = np.arange(-2**11, 2**11, dtype=np.int64)
    for frac in (0, 4, 7, 10):
        out = np.empty_like(x)
        gelu_int(x, frac, 8, out)
        assert np.array_equal(out, R.gelu(x, frac, 8)), frac


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int64, (40,), elements=st.integers(-2**15, 2**15 - 1)), st.integers(0, 14), st.integers(1, 12))
def test_gelu_random(x, frac, sig):
    out = np.empty_like(x)
    gelu_int(x, frac, sig, out)
    assert np.array_equal(out, R.gelu(x, frac, sig))


def test_gelu_is_close_to_float():
    x = np.arange(-2**11, 2**11, dtype=np.int64)
    out = np.empty_like(x)
    gelu_int(x, 8, 8, out)
    xf = x / 256
    ref = xf * 0.5 * (1 + np.vectorize(math.erf)(xf / math.sqrt(2)))
    assert np.abs(out / 2**16 - ref).max() < 0.05


def test_isqrt_exhaustive_and_large():
    for v in range(0, 1 << 16):
        assert isqrt(v) == math.isqrt(v)
    rng = np.random.default_rng(1)
    for v in rng.integers(0, 2**62, 2000):
        assert isqrt(int(v)) == math.isqrt(int(v))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(2, 96), st.integers(0, 2**32))
def test_layernorm_random(rows, c, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2**15, 2**15, (rows, c))
    gamma = rng.integers(-2**15, 2**15, c)
    beta = rng.integers(-2**40, 2**40, c)
    shift = rng.integers(20, 50, c)
    out = np.empty(x.shape, dtype=np.int64)
    sat = layernorm_int(x, gamma, beta, shift, -128, 127, out)
    assert np.array_equal(out, R.layernorm(x, gamma, beta, shift, 8))
    wide = R.layernorm(x, gamma, beta, shift, 64)
    assert sat == int(((wide < -128) | (wide > 127)).sum())


def test_layernorm_constant_row_is_beta():
    x = np.full((1, 8), 123, dtype=np.int64)
    out = np.empty_like(x)
    layernorm_int(x, np.ones(8, np.int64), np.full(8, 5 << 4, np.int64), np.full(8, 4, np.int64), -128, 127, out)
    assert (out == 5).all()


def test_add_aligned_exhaustive_4bit():
    # every pair of int4 operands, every alignment shift in -2..3 on each side, into a 4-bit output (so saturation
    # happens and is counted) and into 8 bits
    a, b = (v.astype(np.int64).ravel() for v in np.meshgrid(I4, I4))
    for sa, sb in itertools.product(range(-2, 4), repeat=2):
        for bits in (4, 8):
            out = np.empty(a.shape, dtype=np.int32)
            sat = add_aligned(a, b, sa, sb, -2**(bits - 1), 2**(bits - 1) - 1, out)
            wide = R.round_shift(a, sa) + R.round_shift(b, sb)
            ref, ref_sat = R.saturate(wide, bits, True)
            assert np.array_equal(out, ref) and sat == ref_sat, (sa, sb, bits)


def test_log2_decode_matches_reference():
    codes = np.arange(16)
    assert np.array_equal(decode_log2(codes, 4), R.log2_decode(codes, 4))
    assert decode_log2(np.array([0, 14, 15]), 4).tolist() == [2**14, 1, 0]


def test_log_sqrt2_decode_by_hand_and_against_reference_and_float():
    # 4 bits: T = 7, scale 2^-14; odd codes carry sqrt(2) as 181/128
    codes = np.array([0, 1, 2, 3, 13, 14, 15])
    assert decode_log_sqrt2(codes, 4).tolist() == [2**14, 181 << 6, 2**13, 181 << 5, 181, 128, 0]
    for bits in (2, 3, 4):
        every = np.arange(2**bits)
        got = decode_log_sqrt2(every, bits).astype(np.int64)
        assert np.array_equal(got, R.log_sqrt2_decode(every, bits)), bits
        t = 2 ** (bits - 1) - 1
        value = got[:-1] / 2.0 ** (t + 7)
        assert np.allclose(value, 2.0 ** (-every[:-1] / 2), rtol=1.2e-4), bits  # 181/128 vs sqrt(2)


def test_conv_via_im2col_matches_direct_convolution():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 3, 9, 11))
    w = rng.integers(-8, 8, (5, 3, 3, 3))
    for stride, pad in ((1, 0), (2, 1), (3, 0)):
        cols = im2col(x, 3, 3, stride, pad)
        out, _ = gemm(cols.reshape(1, -1, 27), w.reshape(1, 5, 27))
        ref = R.conv2d(x, w, None, stride, pad)
        assert np.array_equal(out.reshape(2, ref.shape[2], ref.shape[3], 5).transpose(0, 3, 1, 2), ref)


def test_sum_rows_exhaustive_4bit_with_saturation_counted():
    rows = np.array(list(itertools.product(I4, repeat=3)), dtype=np.int64)   # every row of three int4 values
    for lo, hi in ((-8, 7), (-2**31, 2**31 - 1)):
        out = np.empty(len(rows), dtype=np.int32)
        sat = sum_rows(rows, lo, hi, out)
        total = rows.sum(1)
        assert np.array_equal(out, np.clip(total, lo, hi)) and sat == int(((total < lo) | (total > hi)).sum())


def _one_op(kind: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], out_bits: int, attrs: dict) -> Program:
    tensors = {"x": TensorSpec(in_shape, 16, True, exp=0), "y": TensorSpec(out_shape, out_bits, True, exp=0)}
    return Program("one", ["x"], ["y"], tensors, [Op(kind, "op", ("x",), ("y",), {}, attrs)], {}, {})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data())
def test_reduce_sum_op_equals_the_reference_and_numpy(shape, data):
    axes = sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1)))
    out_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    x = data.draw(hnp.arrays(np.int32, (2, *shape), elements=st.integers(-2**15, 2**15 - 1)))
    p = _one_op("ReduceSum", tuple(shape), out_shape, 20, {"axes": axes})
    validate(p)
    (out,), sat = OPS["ReduceSum"].run(p.ops[0], p, [x])
    total = x.astype(np.int64).sum(axis=tuple(a + 1 for a in axes))
    expected = np.clip(total, -2**19, 2**19 - 1)
    assert np.array_equal(out, expected) and sat == int((total != expected).sum())
    assert np.array_equal(OPS["ReduceSum"].reference(p.ops[0], p, [x.astype(np.int64)]), expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.data())
def test_roll_op_equals_the_reference_and_torch_roll(shape, data):
    import torch

    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=2, unique=True))
    shifts = [data.draw(st.integers(-8, 8)) for _ in axes]
    x = np.arange(2 * int(np.prod(shape)), dtype=np.int32).reshape(2, *shape)
    p = _one_op("Roll", tuple(shape), tuple(shape), 16, {"shifts": shifts, "axes": axes})
    validate(p)
    (out,), _ = OPS["Roll"].run(p.ops[0], p, [x])
    expected = torch.roll(torch.from_numpy(x), shifts, [a + 1 for a in axes]).numpy()
    assert np.array_equal(out, expected)
    assert np.array_equal(OPS["Roll"].reference(p.ops[0], p, [x.astype(np.int64)]), expected)

"""Twin-uniform codes (hwsim.kernels.twin, the TWIN softmax): kernels against the int64 reference and against float,
exhaustive for <= 4-bit codes, property-based beyond; and the program checks that keep producer and reader in step."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hwsim.executor import run
from hwsim.ir import Op, Program, ProgramError, TensorSpec, validate
from hwsim.kernels.softmax import TWIN, softmax_int
from hwsim.kernels.twin import requant_twin, twin_decode
from hwsim.reference import ops as R
from hwsim.reference.executor import run_reference

I4 = range(-8, 8)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("m", [1, 2, 5, 12])
def test_twin_decode_every_code_by_hand_and_against_reference(bits, m):
    half = 1 << (bits - 1)
    unsigned = np.arange(0, 1 << bits, dtype=np.int64)
    out = np.empty(unsigned.shape, np.int16)
    twin_decode(unsigned, bits, m, False, out)
    want = [c if c < half else (c - half) * 2**m for c in range(1 << bits)]
    assert out.tolist() == want == R.twin_decode(unsigned, bits, m, False).tolist()
    signed = np.arange(-half, half, dtype=np.int64)
    twin_decode(signed, bits, m, True, out)
    want = [c if c < 0 else c * 2**m for c in range(-half, half)]
    assert out.tolist() == want == R.twin_decode(signed, bits, m, True).tolist()


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("m", [1, 3, 7])
@pytest.mark.parametrize("shift", [-3, 0, 1, 4, 9])
def test_requant_twin_shift_exhaustive_against_reference_and_float(bits, m, shift):
    """Every accumulator in a window that reaches both saturations: kernel == reference, and each code is the nearest
    point of its region's grid (round half up) clamped to that region's half of the code range."""
    x = np.arange(-(40 << max(shift + m, 0)), 40 << max(shift + m, 0), max(1, 1 << max(shift - 2, 0)),
                  dtype=np.int64).reshape(1, -1)
    out = np.empty(x.shape, np.int64)
    sat = requant_twin(x, np.ones(1, np.int64), np.array([shift]), m, False, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, out)
    ref = R.requant_twin(x, None, np.array([shift]), m, bits)
    assert np.array_equal(out, ref)
    step = np.where(x < 0, 2.0 ** shift, 2.0 ** (shift + m))
    nearest = np.floor(x / step + 0.5)
    lo, hi = np.where(x < 0, -(1 << (bits - 1)), 0), np.where(x < 0, 0, (1 << (bits - 1)) - 1)
    assert np.array_equal(out, np.clip(nearest, lo, hi))
    assert sat == int(((nearest < lo) | (nearest > hi)).sum()) and sat > 0


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 8)), elements=st.integers(-2**31, 2**31 - 1)),
       st.integers(1, 2**20), st.integers(1, 40), st.integers(1, 15), st.sampled_from([4, 6, 8]), st.booleans())
def test_requant_twin_dyadic_random(x, mult, shift, m, bits, per_channel):
    cols = x.shape[1]
    mults = np.full(cols if per_channel else 1, mult, np.int64)
    shifts = (np.arange(cols) % 3 + shift) if per_channel else np.array([shift])
    out = np.empty(x.shape, np.int64)
    requant_twin(x, mults, shifts.astype(np.int64), m, True, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, out)
    assert np.array_equal(out, R.requant_twin(x, mults, shifts, m, bits))


def test_twin_softmax_exhaustive_small_rows():
    rows = np.array(list(itertools.product(I4, repeat=3)), dtype=np.int64)  # every int4 triple
    for frac in (0, 2, 3):
        for bits, m in ((4, 1), (4, 3), (4, 6), (3, 2), (2, 4), (8, 4)):
            out = np.empty(rows.shape, dtype=np.int64)
            softmax_int(rows, frac, bits, TWIN, out, 0, m)
            assert np.array_equal(out, R.softmax(rows, frac, bits, TWIN, twin_m=m)), (frac, bits, m)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 200)), elements=st.integers(-2**15, 2**15 - 1)),
       st.integers(0, 12), st.sampled_from([4, 6, 8]), st.integers(1, 8))
def test_twin_softmax_random_against_reference_and_float(x, frac, bits, m):
    """Kernel == reference; the decoded value is within half a step of its region of the float probability (clamped
    at the top code), and a code
    is fine exactly when the probability rounds below 2^(b-1) fine steps."""
    out = np.empty(x.shape, dtype=np.int64)
    softmax_int(x, frac, bits, TWIN, out, 0, m)
    assert np.array_equal(out, R.softmax(x, frac, bits, TWIN, twin_m=m))
    e = R._exp_fixed(x - x.max(-1, keepdims=True), frac).astype(np.float64)  # the shift exponent, as the unit has it
    p = e / e.sum(-1, keepdims=True)
    fine_step = 2.0 ** -(bits - 1 + m)
    value = R.twin_decode(out, bits, m, False) * fine_step
    coarse = out >= (1 << (bits - 1))
    top = (2 ** (bits - 1) - 1) * 2.0 ** -(bits - 1)  # the largest code: p near 1 saturates there
    assert (np.abs(value - np.minimum(p, top)) <= np.where(coarse, 2.0 ** -(bits - 1), fine_step) * 0.5 + 1e-6).all()
    assert not coarse[p < (2 ** (bits - 1) - 0.6) * fine_step].any()


def _gelu_fc2_program(m_producer: int, m_reader: int, bits: int = 4) -> Program:
    tensors = {"x": TensorSpec((3, 5), 32, True), "codes": TensorSpec((3, 5), bits, True),
               "shift": TensorSpec((1,), 8, True, constant=True), "w": TensorSpec((2, 5), 4, True, constant=True),
               "y": TensorSpec((3, 2), 32, True)}
    constants = {"shift": np.array([2], np.int64),
                 "w": np.array([[1, -2, 3, -4, 5], [7, 0, -8, 2, 1]], np.int64)}
    ops = [Op("Requant", "rq", ("x",), ("codes",), {"shift": "shift"}, {"twin_m": m_producer} if m_producer else {}),
           Op("Linear", "fc2", ("codes",), ("y",), {"weight": "w"}, {"a_twin_m": m_reader} if m_reader else {})]
    return Program("twin", ["x"], ["y"], tensors, ops, constants)


def test_a_twin_program_runs_bit_exact_and_mismatched_ratios_are_refused():
    p = _gelu_fc2_program(3, 3)
    validate(p)
    x = np.random.default_rng(0).integers(-200, 2000, (7, 3, 5)).astype(np.int32)
    got, ref = run(p, x, trace=True).trace, run_reference(p, x)
    assert all(np.array_equal(got[t], ref[t]) for t in ("codes", "y"))
    codes = R.requant_twin(x, None, np.array([2]), 3, 4)
    assert np.array_equal(got["y"], R.matmul(R.twin_decode(codes, 4, 3, True), p.constants["w"]))
    for producer, reader in ((3, 2), (3, 0), (0, 3)):
        with pytest.raises(ProgramError, match="a_twin_m"):
            validate(_gelu_fc2_program(producer, reader))
    with pytest.raises(ProgramError, match="beyond int16"):
        validate(_gelu_fc2_program(13, 13))

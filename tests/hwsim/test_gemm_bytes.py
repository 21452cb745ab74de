"""The byte-operand GEMM paths (VPDPBUSD, VPMADDUBSW) and their selection, against the int64 reference.

Each path is forced in turn (``gemm(..., byte_isas=...)``); a path the host cannot run is skipped here and its
absence is what ``isa_available`` reports (the int16 path, always run, is the portable fallback).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.kernels.gemm import byte_path, gemm, pack_b
from hwsim.kernels.gemm_bytes import AVX2, VNNI, cols, isa_available, pack_bytes
from hwsim.reference import ops as R

PATHS = [pytest.param(isa, id=name, marks=pytest.mark.skipif(isa not in isa_available(), reason=f"no {name} here"))
         for isa, name in ((VNNI, "vnni"), (AVX2, "avx2"))]
I4, U4 = np.arange(-8, 8), np.arange(0, 16)


@pytest.mark.parametrize("isa", PATHS)
def test_exhaustive_4bit_quads(isa):
    # every int4 / uint4 pair of the left operand against every int4 pair on the right, with K = 2 and K = 5 (a quad
    # straddled and zero-padded): each dot product of these codes, on the path under test
    pairs = np.array(list(itertools.product(I4, I4)))
    upairs = np.array(list(itertools.product(U4, U4)))
    for lhs in (pairs, upairs):
        assert byte_path(int(lhs.min()), int(lhs.max()), pack_b(pairs[None]), 2, 0, (isa,)) is not None
        out, sat = gemm(lhs[None], pairs[None], byte_isas=(isa,))
        assert sat == 0 and np.array_equal(out[0], R.matmul(lhs, pairs))
        lhs5, rhs5 = np.concatenate([lhs, lhs[:, :1] * 0 + 7, lhs], 1), np.concatenate([pairs, pairs[::-1, :1], pairs], 1)
        out, _ = gemm(lhs5[None], rhs5[None], byte_isas=(isa,))
        assert np.array_equal(out[0], R.matmul(lhs5, rhs5))


@pytest.mark.parametrize("isa", PATHS)
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 11), st.integers(1, 70), st.integers(1, 70), st.sampled_from(["s8", "u8"]),
       st.booleans(), st.integers(0, 2**32))
def test_random_bytes_match_reference(isa, g, m, k, n, a_kind, with_bias, seed):
    # m, n straddle the tile (partial row blocks and column panels), k straddles the quads; signed activations take
    # the flip (a + 128) and its column-sum correction, unsigned ones do not; a bias per group too
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (g, m, k)) if a_kind == "s8" else rng.integers(0, 256, (g, m, k))
    b_max = 128 if isa == VNNI else 64  # AVX2 takes bytes only where no int16 pair sum can saturate
    b = rng.integers(-b_max, b_max, (g, n, k))
    bias = rng.integers(-2**20, 2**20, (g, n) if g > 1 and seed % 2 else n) if with_bias else None
    packed = pack_b(b)
    assert byte_path(int(a.min()), int(a.max()), packed, k, 2**20, (isa,)) == (isa, bool(a.min() < 0))
    out, sat = gemm(a, packed, bias, byte_isas=(isa,))
    expected = R.matmul(a, b) + (0 if bias is None else bias[:, None, :] if bias.ndim == 2 else bias)
    assert sat == 0 and np.array_equal(out, expected)


@pytest.mark.parametrize("isa", PATHS)
def test_byte_extremes_exact(isa):
    # the corners of the operand ranges: -128 x -128 on VNNI (127 * 128 per product after the flip), 255 x +-64 on
    # AVX2 (pair sum 32 640, the largest that does not saturate int16)
    k = 193
    corners = [(-128, -128), (127, -128), (-128, 127), (255, 127), (0, -128)] if isa == VNNI else \
        [(255, -64), (255, 63), (-128, -64), (127, -64)]
    for a_val, b_val in corners:
        a = np.full((1, 5, k), a_val)
        a[0, 1::2, ::3] = 0 if a_val > 0 else -a_val - 1  # mixed signs / magnitudes in some rows
        b = np.full((1, 33, k), b_val)
        out, sat = gemm(a, b, np.arange(33) - 16, byte_isas=(isa,))
        assert sat == 0 and np.array_equal(out, R.matmul(a, b, np.arange(33) - 16)), (a_val, b_val)


def test_selection_boundaries():
    b8, b7, b65 = pack_b(np.array([[[-128, 127]]])), pack_b(np.array([[[-64, 63]]])), pack_b(np.array([[[65, 0]]]))
    both = (VNNI, AVX2)
    assert byte_path(-128, 127, b8, 2, 0, both) == (VNNI, True)
    assert byte_path(0, 255, b8, 2, 0, both) == (VNNI, False)
    assert byte_path(-1, 128, b8, 2, 0, both) is None           # neither signed nor unsigned bytes
    assert byte_path(0, 256, b8, 2, 0, both) is None
    assert byte_path(-129, 0, b8, 2, 0, both) is None
    assert byte_path(0, 1, pack_b(np.array([[[-129]]])), 1, 0, both) is None
    assert byte_path(0, 1, pack_b(np.array([[[128]]])), 1, 0, both) is None
    assert byte_path(0, 255, b7, 2, 0, (AVX2,)) == (AVX2, False)  # 2 * 255 * 64 = 32 640: no saturation
    assert byte_path(0, 255, b65, 2, 0, (AVX2,)) is None         # 2 * 255 * 65 = 33 150 would saturate
    assert byte_path(0, 255, b65, 2, 0, both) == (VNNI, False)   # VNNI sums in int32
    assert byte_path(-128, 127, b7, 2, 0, (AVX2,)) == (AVX2, True)   # flipped: 2 * 255 * 64
    assert byte_path(-128, 127, b8, 2, 0, ()) is None
    # the offset operand's int32 bound: K * 255 * 128 plus the column-sum correction must fit
    assert byte_path(-128, 127, b8, 30000, 0, both) == (VNNI, True)
    assert byte_path(-128, 127, b8, 50000, 0, both) is None


def test_saturating_avx2_operands_fall_back_exactly():
    # 255 x -65 pairs would saturate VPMADDUBSW: asking for AVX2 alone must still give the exact sum (int16 path)
    a, b = np.full((1, 4, 8), 255), np.full((1, 16, 8), -65)
    out, sat = gemm(a, b, byte_isas=(AVX2,))
    assert sat == 0 and (out == 8 * 255 * -65).all()


@pytest.mark.parametrize("isa", PATHS)
def test_pack_bytes_layout(isa):
    # panel [kk, 4c + t] = b[c, 4kk + t] (what the kernel's lane c reads), zero padded; sums over the true K
    b = np.random.default_rng(3).integers(-128, 128, (2, 21, 7)).astype(np.int8)
    panels, sums = pack_bytes(b, isa)
    c = cols(isa)
    assert panels.shape == (2, -(-21 // c), 2, 4 * c) and np.array_equal(sums, b.sum(2, dtype=np.int64))
    signed = panels.view(np.int8)
    for g, j, k in ((1, 3, 6), (0, 20, 0), (1, 17, 4)):
        assert signed[g, j // c, k // 4, 4 * (j % c) + k % 4] == b[g, j, k]
    assert signed[1, 0, 1, 4 * 3 + 3] == 0            # K padded from 7 to 8 with zeros
    assert (signed[:, -1, :, 4 * (20 % c + 1):] == 0).all()  # columns past N are zero
    k_major, k_sums = pack_bytes(b.transpose(0, 2, 1), isa, k_major=True)
    assert np.array_equal(k_major, panels) and np.array_equal(k_sums, sums)


def test_paths_agree_on_a_layer():
    # one DeiT-Tiny-sized qkv product on every path the host has and on the int16 path: identical int32 results
    rng = np.random.default_rng(7)
    a, b, bias = rng.integers(-128, 128, (1, 197, 192)), rng.integers(-64, 64, (1, 576, 192)), rng.integers(-999, 999, 576)
    packed = pack_b(b)
    ref, _ = gemm(a, packed, bias, byte_isas=())
    assert np.array_equal(ref, R.matmul(a, b, bias))
    for isa in isa_available():
        assert np.array_equal(gemm(a, packed, bias, byte_isas=(isa,))[0], ref)

"""rtl.hexfile: the vectorised $readmemh / $writememh paths against Python's own int parsing."""
from __future__ import annotations

import numpy as np
import pytest

from rtl.hexfile import hex_words, read_hex, write_hex


@pytest.mark.parametrize("bits", [1, 2, 4, 5, 8, 16, 32, 33, 60, 64])
def test_round_trip_every_width(tmp_path, bits):
    # extremes of the signed range plus random words: the two's-complement mask, the digit count (bits not a
    # multiple of 4) and the sign extension on reading
    rng = np.random.default_rng(bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    values = np.concatenate([[lo, hi, 0, -1 if bits > 1 else 0], rng.integers(lo, hi, 500, endpoint=True)])
    path = tmp_path / "v.hex"
    write_hex(path, values, bits)
    lines = path.read_text().splitlines()
    assert lines == [format(int(v) & ((1 << bits) - 1), f"0{(bits + 3) // 4}x") for v in values]
    assert np.array_equal(read_hex(path, bits, len(values)), values)
    assert np.array_equal(read_hex(path, bits, 7), values[:7])


def test_icarus_layout_and_odd_files_take_the_general_parser(tmp_path):
    # Icarus writes "// 0x00000010" address comments; upper-case digits; a short last line; all must read the same
    words = [0x1F, 0xFFE, 0x7, 0x800]
    icarus = tmp_path / "i.hex"
    icarus.write_text("// 0x00000000\n01f\nffe\n// 0x00000002\n007\n800\n")
    assert np.array_equal(read_hex(icarus, 12, 4), [0x1F, -2, 7, -2048])
    upper = tmp_path / "u.hex"
    upper.write_text("01F\nFFE\n007\n800\n")
    assert np.array_equal(read_hex(upper, 12, 4), [0x1F, -2, 7, -2048])
    ragged = tmp_path / "r.hex"
    ragged.write_text("1f\nffe\n7\n800\n")
    assert hex_words(ragged, 4) == words and np.array_equal(read_hex(ragged, 12, 4), [0x1F, -2, 7, -2048])


def test_unknown_digits_are_not_read_as_numbers(tmp_path):
    # an x (unwritten memory word) must not become a number silently: the general parser raises on it
    path = tmp_path / "x.hex"
    path.write_text("01\nxx\n")
    with pytest.raises(ValueError):
        read_hex(path, 8, 2)

"""Verilog ``$readmemh`` / ``$writememh`` text files: two's-complement words, one per line (docs/vectors.md). No
simulator import: vitsim's vector export and every testbench share these.

Both directions are vectorised with numpy (a layer's buffers are 10^5 words: a Python loop per word cost more wall
time than simulating the layer). Files in the plain one-word-per-line layout that Verilator writes are parsed as a
fixed-width byte matrix; anything else (Icarus's ``// 0x...`` address comments, other widths) takes the general path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_VALUE = np.full(256, 255, np.uint8)
_VALUE[_DIGITS] = np.arange(16)
_VALUE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def write_hex(path: Path, values: np.ndarray, bits: int) -> None:
    """Two's-complement hex, one word per line, as $readmemh reads it."""
    digits = (bits + 3) // 4
    if bits > 64:
        raise ValueError(f"hex words of {bits} bits: at most 64")
    words = np.asarray(values).ravel().astype(np.int64).view(np.uint64) & np.uint64((1 << bits) - 1)
    text = np.empty((len(words), digits + 1), np.uint8)
    for d in range(digits):
        text[:, d] = _DIGITS[(words >> np.uint64(4 * (digits - 1 - d))) & np.uint64(15)]
    text[:, digits] = ord("\n")
    Path(path).write_bytes(text.tobytes())


def hex_words(path: Path, count: int) -> list[int]:
    """Words of a $writememh file (Icarus adds "// 0x..." address comments; Verilator does not)."""
    words = []
    for line in Path(path).read_text().splitlines():
        words += [int(w, 16) for w in line.split("//", 1)[0].split()]
    return words[:count]


def _fixed_width_words(data: bytes, count: int) -> np.ndarray | None:
    """The first ``count`` words of a file of equal-length hex lines (no comments), or None if it is not one."""
    width = data.find(b"\n") + 1
    if width < 2 or width > 16 or len(data) % width or len(data) // width < count or b"/" in data:
        return None
    text = np.frombuffer(data, np.uint8).reshape(-1, width)[:count]
    if (text[:, -1] != ord("\n")).any():
        return None
    nibbles = _VALUE[text[:, :-1]]
    if (nibbles == 255).any():  # x / z digits or stray characters: the general parser reports them
        return None
    words = np.zeros(len(text), np.int64)
    for d in range(width - 1):
        words = (words << 4) | nibbles[:, d]
    return words


def read_hex(path: Path, bits: int, count: int) -> np.ndarray:
    vals = _fixed_width_words(Path(path).read_bytes(), count)
    if vals is None:  # Python ints: a 64-bit word is sign-converted before it becomes an int64
        return np.array([w - (1 << bits) if w >= 1 << (bits - 1) else w for w in hex_words(path, count)], np.int64)
    return np.where(vals >= 1 << (bits - 1), vals - (1 << bits), vals)

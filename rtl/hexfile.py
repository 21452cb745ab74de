"""Verilog ``$readmemh`` / ``$writememh`` text files: two's-complement words, one per line (docs/vectors.md). No
simulator import: vitsim's vector export and every testbench share these."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_hex(path: Path, values: np.ndarray, bits: int) -> None:
    """Two's-complement hex, one word per line, as $readmemh reads it."""
    mask = (1 << bits) - 1
    digits = (bits + 3) // 4
    path.write_text("\n".join(format(int(v) & mask, f"0{digits}x") for v in np.asarray(values).ravel()) + "\n")


def hex_words(path: Path, count: int) -> list[int]:
    """Words of a $writememh file (Icarus adds "// 0x..." address comments; Verilator does not)."""
    words = []
    for line in path.read_text().splitlines():
        words += [int(w, 16) for w in line.split("//", 1)[0].split()]
    return words[:count]


def read_hex(path: Path, bits: int, count: int) -> np.ndarray:
    vals = np.array(hex_words(path, count), dtype=np.int64)
    return np.where(vals >= 1 << (bits - 1), vals - (1 << bits), vals)

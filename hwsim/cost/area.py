"""Area of a hardware configuration from the synthesized cell table (hwsim/configs/area.yaml).

The table holds yosys cell counts and um^2 for the PE with every set of operand modes, the column requantizer and each
nonlinear unit (the softmax unit with its log-sqrt(2) code where the array has the log_sqrt2 mode, with its
divider and twin-uniform codes where it has the twin mode);
``python -m rtl.synth --write`` regenerates it from the RTL (rtl/synth.py states the cells -> um^2
factors). Area = R x C PEs + C requantizers + the nonlinear units. SRAM buffers and wiring are not included, so the
figure compares compute configurations; it is not a floor plan.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from hwsim.arch import CONFIG_DIR, HardwareConfig

AREA_TABLE = CONFIG_DIR / "area.yaml"


@lru_cache(maxsize=1)
def area_table(path: Path = AREA_TABLE) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no area table; run `python -m rtl.synth --write`")
    return yaml.safe_load(path.read_text())


def pe_variant(modes: tuple[str, ...]) -> str:
    """Key of the PE variant with ``modes`` in the table (int8, int8+log2, int8+int4x2, int8+int4x2+log2,
    int8+int4x2+log2+log_sqrt2, and with +twin: int8, int8+int4x2+log2, int8+int4x2+log2+log_sqrt2)."""
    return "+".join(m for m in ("int8", "int4x2", "log2", "log_sqrt2", "twin") if m in modes)


def softmax_variant(modes: tuple[str, ...]) -> str:
    """The softmax unit an array needs: its log-sqrt(2) code for the log_sqrt2 mode, its divider and twin-uniform
    codes for the twin mode."""
    return "softmax" + ("+sqrt2" if "log_sqrt2" in modes else "") + ("+twin" if "twin" in modes else "")


def area_um2(hw: HardwareConfig) -> dict[str, float]:
    """Area by part (um^2): array (PEs), requant (column shifters), softmax, layernorm, gelu; ``total`` sums them."""
    table = area_table()
    units = table["units"]
    key = pe_variant(hw.array.pe_modes)
    if key not in table["pe"]:
        raise ValueError(f"no synthesized PE with modes {key}; the area table has {sorted(table['pe'])}")
    softmax = softmax_variant(hw.array.pe_modes)
    parts = {"array": hw.array.rows * hw.array.cols * table["pe"][key]["um2"],
             "requant": hw.array.cols * units["requant"]["um2"],
             "softmax": hw.units.softmax * units[softmax]["um2"],
             "layernorm": hw.units.layernorm * units["layernorm"]["um2"],
             "gelu": hw.units.gelu * units["gelu"]["um2"]}
    parts["total"] = sum(parts.values())
    return parts

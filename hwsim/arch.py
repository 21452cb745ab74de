"""Accelerator configuration: frozen dataclasses loaded from YAML (hwsim/configs/default.yaml), overridable."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


class ConfigError(ValueError):
    """An impossible hardware configuration (a user error)."""


@dataclass(frozen=True)
class ArrayConfig:
    """An R x C output-stationary multi-precision MAC array with one shifter requantizer per column."""

    rows: int = 16
    cols: int = 16
    acc_bits: int = 32
    clock_mhz: float = 500.0

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1 or self.rows > 256 or self.cols > 256:
            raise ConfigError(f"array size {self.rows}x{self.cols} outside 1..256")
        if not 8 <= self.acc_bits <= 48:
            raise ConfigError(f"accumulator width {self.acc_bits} outside 8..48")


@dataclass(frozen=True)
class EnergyTable:
    """Per-operation energies in pJ (45 nm defaults, Horowitz ISSCC 2014)."""

    mult_int8_pj: float = 0.2
    add_pj: dict[int, float] = field(default_factory=lambda: {8: 0.03, 16: 0.05, 32: 0.1})
    shift_pj_per_bit: float = 0.003
    sram_64b_access_pj: float = 10.0
    dram_32b_access_pj: float = 640.0

    def mult(self, a_bits: int, b_bits: int) -> float:
        return self.mult_int8_pj * a_bits * b_bits / 64

    def add(self, bits: int) -> float:
        """Interpolated per bit from the nearest table entry at or above ``bits`` (linear in width)."""
        ref = min((b for b in self.add_pj if b >= bits), default=max(self.add_pj))
        return self.add_pj[ref] * bits / ref


@dataclass(frozen=True)
class HardwareConfig:
    array: ArrayConfig = ArrayConfig()
    energy: EnergyTable = EnergyTable()


def load_config(path: str | Path | None = None, **overrides: Any) -> HardwareConfig:
    """Defaults, then the YAML file, then keyword overrides of array fields (rows=8, cols=8, ...)."""
    data = yaml.safe_load(Path(path or DEFAULT_CONFIG).read_text()) or {}
    array_fields = {f.name for f in fields(ArrayConfig)}
    unknown = set(data.get("array", {})) - array_fields
    if unknown:
        raise ConfigError(f"{path or DEFAULT_CONFIG}: unknown array fields {sorted(unknown)}")
    array = ArrayConfig(**data.get("array", {}))
    energy = EnergyTable(**{k: ({int(b): float(v) for b, v in val.items()} if k == "add_pj" else val)
                            for k, val in data.get("energy", {}).items()})
    return HardwareConfig(replace(array, **{k: v for k, v in overrides.items() if v is not None}), energy)

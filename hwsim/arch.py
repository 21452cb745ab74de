"""Accelerator configuration: frozen dataclasses from YAML, named presets, dotted overrides.

A configuration is read in three layers: the dataclass defaults (the 16x16 preset), a preset name (``edge-8x8``,
``16x16``, ``32x32``: hwsim/configs/<name>.yaml) or a YAML file, then ``section.field=value`` overrides (the CLI's
``--set``). Every section and field is checked: an unknown key, an impossible size or a zero bandwidth is a
``ConfigError`` naming the key and the file, never a traceback later in the cost model.

The hardware (docs/hardware.md explains the cost model that reads it):
- ``array``: R x C multi-precision MAC PEs, output-stationary as rtl/src/gemm_engine.v ("os"; "ws", weight-stationary,
  exists in the model only), the operand modes each PE has (``int8`` always; ``int4x2`` packs two 4-bit MACs per PE
  per cycle; ``log2`` multiplies a log2 softmax code by a shift) and one shifter requantizer per column;
- ``units``: how many softmax, LayerNorm and GELU units, and the lanes of the vector path (Add, ReduceSum, Requant);
- ``memory``: SRAM buffers for the A operand, the B operand and outputs, a global activation buffer (KB), double
  buffering, DRAM bytes per cycle;
- ``clock_mhz``;
- ``energy``: the 45 nm table (Horowitz, "Computing's energy problem", ISSCC 2014), every figure overridable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_PRESET = "16x16"
PE_MODES = ("int8", "int4x2", "log2", "log_sqrt2", "twin")


class ConfigError(ValueError):
    """An impossible or unreadable hardware configuration (a user error)."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass(frozen=True)
class ArrayConfig:
    """An R x C MAC array with one shifter requantizer per column."""

    rows: int = 16
    cols: int = 16
    acc_bits: int = 32
    dataflow: str = "os"
    pe_modes: tuple[str, ...] = PE_MODES

    def __post_init__(self) -> None:
        object.__setattr__(self, "pe_modes", tuple(self.pe_modes))
        _require(1 <= self.rows <= 256 and 1 <= self.cols <= 256, f"array size {self.rows}x{self.cols} outside 1..256")
        _require(8 <= self.acc_bits <= 48, f"accumulator width {self.acc_bits} outside 8..48")
        _require(self.dataflow in ("os", "ws"), f"array.dataflow {self.dataflow!r}, want 'os' or 'ws'")
        unknown = set(self.pe_modes) - set(PE_MODES)
        _require(not unknown, f"array.pe_modes: unknown modes {sorted(unknown)}; known: {list(PE_MODES)}")
        _require("int8" in self.pe_modes, "array.pe_modes must include 'int8' (every PE has the 8-bit mode)")


@dataclass(frozen=True)
class UnitsConfig:
    """Nonlinear units (each processes one row at a time, as rtl/src/*_unit.v) and the vector path's lanes."""

    softmax: int = 1
    layernorm: int = 1
    gelu: int = 1
    vector_lanes: int = 16

    def __post_init__(self) -> None:
        for f in fields(self):
            _require(1 <= getattr(self, f.name) <= 1024, f"units.{f.name} = {getattr(self, f.name)} outside 1..1024")


@dataclass(frozen=True)
class MemoryConfig:
    """On-chip SRAM buffers (KB) and the DRAM link. ``act_kb`` is a global activation buffer: activations that fit
    (with everything else alive at the time) stay on chip between ops; 0 sends every activation through DRAM."""

    a_kb: float = 32.0
    b_kb: float = 64.0
    out_kb: float = 32.0
    act_kb: float = 128.0
    double_buffer: bool = True
    dram_bytes_per_cycle: float = 16.0

    def __post_init__(self) -> None:
        for name in ("a_kb", "b_kb", "out_kb"):
            _require(getattr(self, name) > 0, f"memory.{name} = {getattr(self, name)} must be > 0")
        _require(self.act_kb >= 0, f"memory.act_kb = {self.act_kb} must be >= 0")
        _require(self.dram_bytes_per_cycle > 0, f"memory.dram_bytes_per_cycle = {self.dram_bytes_per_cycle} must be > 0")


@dataclass(frozen=True)
class EnergyTable:
    """Per-operation energies in pJ, 45 nm (Horowitz, ISSCC 2014)."""

    mult_int8_pj: float = 0.2                 # scaled by (a_bits * b_bits) / 64
    add_pj: dict[int, float] = field(default_factory=lambda: {8: 0.03, 16: 0.05, 32: 0.1})  # linear in width
    shift_pj_per_bit: float = 0.003           # barrel shift / rounding, per bit of the shifted word
    sram_64b_access_pj: float = 10.0          # one 64-bit access of an 8 KB SRAM ...
    sram_ref_kb: float = 8.0                  # ... scaled by sqrt(size / 8 KB) for other sizes (wire length)
    dram_pj_per_bit: float = 20.0             # 640 pJ per 32-bit DRAM access

    def __post_init__(self) -> None:
        object.__setattr__(self, "add_pj", {int(b): float(v) for b, v in dict(self.add_pj).items()})
        _require(bool(self.add_pj), "energy.add_pj needs at least one width")
        for f in fields(self):
            value = getattr(self, f.name)
            values = value.values() if isinstance(value, dict) else [value]
            _require(all(v >= 0 for v in values), f"energy.{f.name} must not be negative")

    def mult(self, a_bits: int, b_bits: int) -> float:
        return self.mult_int8_pj * a_bits * b_bits / 64

    def add(self, bits: int) -> float:
        """Interpolated per bit from the nearest table entry at or above ``bits`` (linear in width)."""
        ref = min((b for b in self.add_pj if b >= bits), default=max(self.add_pj))
        return self.add_pj[ref] * bits / ref

    def shift(self, bits: int) -> float:
        return self.shift_pj_per_bit * bits

    def sram_access(self, kb: float) -> float:
        """One 64-bit access of a ``kb`` KB SRAM."""
        return self.sram_64b_access_pj * math.sqrt(kb / self.sram_ref_kb)


@dataclass(frozen=True)
class HardwareConfig:
    name: str = DEFAULT_PRESET
    clock_mhz: float = 500.0
    array: ArrayConfig = ArrayConfig()
    units: UnitsConfig = UnitsConfig()
    memory: MemoryConfig = MemoryConfig()
    energy: EnergyTable = EnergyTable()

    def __post_init__(self) -> None:
        _require(self.clock_mhz > 0, f"clock_mhz = {self.clock_mhz} must be > 0")


def presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _section(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'the file'}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{'unknown keys' if not where else where + ': unknown keys'} {unknown}; known: {sorted(known)}")
    kwargs = {}
    defaults = cls()
    for key, value in data.items():
        default, name = getattr(defaults, key), f"{where}.{key}".strip(".")
        kwargs[key] = _section(type(default), value, name) if is_dataclass(default) else _typed(value, default, name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or 'config'}: {err}") from err


def _typed(value: Any, default: Any, where: str) -> Any:
    """``value`` checked against the type of the field's default (YAML gives ints where floats are meant)."""
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          tuple: lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
          dict: lambda v: isinstance(v, Mapping)}[type(default)]
    if not ok(value):
        raise ConfigError(f"{where} = {value!r}: want {type(default).__name__}")
    return float(value) if isinstance(default, float) else value


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse override value {text!r}: {err}") from err


def _apply_override(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def load_hardware(spec: str | Path | None = None, overrides: Mapping[str, Any] | list[str] | None = None) -> HardwareConfig:
    """A preset name or a YAML path (default: the 16x16 preset), then overrides: a mapping of dotted keys
    (``{"array.rows": 8}``) or ``["array.rows=8", ...]`` strings as the CLI passes them."""
    spec = DEFAULT_PRESET if spec is None else spec
    path = Path(spec)
    if not path.suffix and (CONFIG_DIR / f"{spec}.yaml").exists():
        path = CONFIG_DIR / f"{spec}.yaml"
    elif not path.exists():
        raise ConfigError(f"hardware {str(spec)!r}: neither a preset ({', '.join(presets())}) nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    data.setdefault("name", path.stem)
    items = overrides.items() if isinstance(overrides, Mapping) else [_split(o) for o in overrides or []]
    for key, value in items:
        _apply_override(data, key, value)
    try:
        return _section(HardwareConfig, data, "")
    except ConfigError as err:
        raise ConfigError(f"hardware {path.stem} ({path}): {err}") from err


def _split(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: want section.field=value (e.g. array.rows=8)")
    key, value = text.split("=", 1)
    return key.strip(), _parse_value(value)


def with_array(hw: HardwareConfig, rows: int, cols: int) -> HardwareConfig:
    """The same hardware with another array size (RTL runs and sweeps)."""
    return replace(hw, array=replace(hw.array, rows=rows, cols=cols))

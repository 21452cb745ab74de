"""Cost models of the accelerator: cycles (exact for the RTL's tiles and unit rows), DRAM traffic, energy and the
whole-program walk (``cost(program, hw)``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hwsim.arch import HardwareConfig
    from hwsim.cost.program import ProgramCost
    from hwsim.ir.schema import Program


def cost(program: "Program", hw: "HardwareConfig | None" = None) -> "ProgramCost":
    """Price every op of ``program`` on ``hw`` (see hwsim.cost.pricing); imported lazily so that the op registry,
    which imports the pricing hooks, and this package do not import each other at load time."""
    from hwsim.cost.program import cost as _cost

    return _cost(program, hw)

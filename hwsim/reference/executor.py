"""Reference execution of a program with each op kind's int64 reference (hwsim.ops registry, built on
hwsim.reference.ops), for tensor-by-tensor comparison against the numba executor's trace. Slow by design."""
from __future__ import annotations

import numpy as np

from hwsim.ir.schema import Program
from hwsim.ops import OPS


def run_reference(program: Program, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor (inputs, constants excluded) computed by the reference ops, keyed by name."""
    values: dict[str, np.ndarray] = {program.inputs[0]: np.asarray(x, np.int64)}
    for op in program.ops:
        args = [values[t] if t in values else program.constants[t][None].astype(np.int64) for t in op.inputs]
        values[op.outputs[0]] = np.asarray(OPS[op.kind].reference(op, program, args), np.int64)
    return values

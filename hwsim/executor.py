"""The golden model: execute an integer program with integer arithmetic only (hwsim.ops on numba kernels).

``quantize_input`` is the one float step, at the boundary (the host or sensor delivers integers to an accelerator):
q = clamp(floor(x * 2^-exp + 1/2)) with the input tensor's power-of-two scale, the same rounding as fake-quant.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwsim.ir.schema import Program
from hwsim.ops import OPS


class InputMismatch(ValueError):
    """Input data that do not fit the program's input tensor (a user error)."""


@dataclass
class RunResult:
    """Outputs by name, every intermediate tensor when traced, and saturated-value counts per op."""

    outputs: dict[str, np.ndarray]
    trace: dict[str, np.ndarray] = field(default_factory=dict)
    saturations: dict[str, int] = field(default_factory=dict)

    @property
    def logits(self) -> np.ndarray:
        return next(iter(self.outputs.values()))


def quantize_input(program: Program, images: np.ndarray) -> np.ndarray:
    """Float images -> the program input's integers (power-of-two scale, round half up, saturate)."""
    spec = program.spec(program.inputs[0])
    if spec.exp is None:
        scale = spec.scale
        if scale is None:
            raise InputMismatch(f"input {program.inputs[0]!r} has neither a power-of-two exponent nor a float scale")
        q = np.floor(np.asarray(images, np.float64) / scale + 0.5)
    else:
        q = np.floor(np.ldexp(np.asarray(images, np.float64), -spec.exp) + 0.5)
    if tuple(q.shape[1:]) != spec.shape:
        raise InputMismatch(f"images of shape {q.shape[1:]} do not fit program input {spec.shape}")
    return np.clip(q, spec.qmin, spec.qmax).astype(np.int32)


def run(program: Program, x: np.ndarray, trace: bool = False) -> RunResult:
    """Run ``program`` on integer input ``x`` [batch, *input shape]; returns outputs, optional trace, saturations."""
    spec = program.spec(program.inputs[0])
    if tuple(x.shape[1:]) != spec.shape:
        raise InputMismatch(f"input of shape {x.shape[1:]} does not fit program input {spec.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"the executor takes integers; got {x.dtype} (use quantize_input for float images)")
    if x.size and (int(x.min()) < spec.qmin or int(x.max()) > spec.qmax):
        raise InputMismatch(f"input values exceed the {spec.bits}-bit range of {program.inputs[0]!r}")
    values: dict[str, np.ndarray] = {program.inputs[0]: x}
    consts = {n: a[None] for n, a in program.constants.items()}
    saturations: dict[str, int] = {}
    last_use = {}
    for i, op in enumerate(program.ops):
        for t in op.inputs:
            last_use[t] = i
    keep = set(program.outputs)
    for i, op in enumerate(program.ops):
        args = [values[t] if t in values else consts[t] for t in op.inputs]
        outs, sat = OPS[op.kind].run(op, program, args)
        saturations[op.name] = int(sat)
        for t, v in zip(op.outputs, outs):
            values[t] = v
        if not trace:  # free tensors nobody reads again
            for t in op.inputs:
                if last_use.get(t) == i and t not in keep:
                    values.pop(t, None)
    outputs = {t: values[t] for t in program.outputs}
    return RunResult(outputs, dict(values) if trace else {}, saturations)


def predict(program: Program, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Arg-max class of float images through quantize_input and run."""
    preds = []
    for start in range(0, len(images), batch_size):
        logits = run(program, quantize_input(program, images[start:start + batch_size])).logits
        preds.append(logits.reshape(len(logits), -1).argmax(1))
    return np.concatenate(preds)

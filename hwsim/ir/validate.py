"""Validation of an integer program: every inconsistency is a ``ProgramError`` naming the op or tensor at fault."""
from __future__ import annotations

import numpy as np

from hwsim.ir.schema import Program


class ProgramError(ValueError):
    """A program that is malformed, inconsistent or unreadable."""


def _check_constants(program: Program) -> None:
    for name, spec in program.tensors.items():
        if not (1 <= spec.bits <= 64):
            raise ProgramError(f"tensor {name!r}: bits {spec.bits} outside 1..64")
        if spec.constant:
            if name not in program.constants:
                raise ProgramError(f"constant tensor {name!r} is declared but missing from the file")
            arr = program.constants[name]
            if tuple(arr.shape) != spec.shape:
                raise ProgramError(f"constant {name!r}: stored shape {tuple(arr.shape)} differs from declared {spec.shape}")
            if not np.issubdtype(arr.dtype, np.integer):
                raise ProgramError(f"constant {name!r}: dtype {arr.dtype} is not an integer type")
            if arr.size and (int(arr.min()) < spec.qmin or int(arr.max()) > spec.qmax):
                raise ProgramError(f"constant {name!r}: values [{arr.min()}, {arr.max()}] exceed {spec.bits}-bit "
                                   f"{'signed' if spec.signed else 'unsigned'} range")
    extra = set(program.constants) - {n for n, s in program.tensors.items() if s.constant}
    if extra:
        raise ProgramError(f"constants without a declared tensor: {sorted(extra)[:5]}")


# Zero points: a Requant adds one (after rounding) and a LayerNorm adds one through its beta (z 2^shift), layout ops
# and ReLU (max(x, z)) keep theirs, and only a Linear or Conv2d (the exporter folds -z * sum_k W_nk into the bias, so
# the op multiplies raw codes; a Conv2d pads with z), AvgPool2d and Mul (they subtract it) do arithmetic on one.
# Everywhere else a non-zero zero point would be silently ignored.
ZERO_POINT_PRODUCERS = ("Requant", "LayerNorm", "ReLU")
LAYOUT_KINDS = ("Reshape", "Permute", "Slice", "Roll", "Concat")
ZERO_POINT_CONSUMERS = ("Linear", "Conv2d", "ReLU", "AvgPool2d", "Mul") + LAYOUT_KINDS


def _check_zero_points(program: Program) -> None:
    producer = {t: op for op in program.ops for t in op.outputs}
    for name, spec in program.tensors.items():
        op = producer.get(name)
        if op is not None and op.kind in LAYOUT_KINDS:
            moved = {program.tensors[t].zero_point for t in op.inputs}
            if moved != {spec.zero_point}:
                raise ProgramError(f"tensor {name!r}: {op.kind} keeps its input's zero point {sorted(moved)}, "
                                   f"but it declares {spec.zero_point}")
        if spec.zero_point == 0:
            continue
        if not spec.qmin <= spec.zero_point <= spec.qmax:
            raise ProgramError(f"tensor {name!r}: zero point {spec.zero_point} outside its {spec.bits}-bit range")
        if op is None or op.kind not in ZERO_POINT_PRODUCERS + LAYOUT_KINDS:
            raise ProgramError(f"tensor {name!r}: a zero point needs a Requant or LayerNorm producer, got "
                               f"{op.kind if op else 'none'}")
        readers = {o.kind for o in program.ops if name in o.inputs}
        if not readers <= set(ZERO_POINT_CONSUMERS):
            raise ProgramError(f"tensor {name!r} has zero point {spec.zero_point} but is read by "
                               f"{sorted(readers - set(ZERO_POINT_CONSUMERS))}, which ignore zero points")


# Twin-uniform codes (hwsim.kernels.twin) mean something only to a GEMM that decodes them with the same ratio: a
# Softmax or Requant with ``twin_m`` makes them, layout ops move them, and every arithmetic reader must declare the
# same ``a_twin_m`` on its left operand (and no reader may take a plain code as twin).
TWIN_PRODUCERS = ("Softmax", "Requant")


def _check_twin_codes(program: Program) -> None:
    twin: dict[str, int] = {}
    for op in program.ops:
        if op.kind in LAYOUT_KINDS:
            moved = {twin.get(t, 0) for t in op.inputs}
            if len(moved) > 1:
                raise ProgramError(f"op {op.name!r}: {op.kind} mixes twin-uniform and other codes")
            for t in op.outputs:
                twin[t] = moved.pop()
            continue
        for i, t in enumerate(op.inputs):
            expected = int(op.attrs.get("a_twin_m", 0)) if i == 0 else 0
            if twin.get(t, 0) != expected:
                raise ProgramError(f"op {op.name!r} ({op.kind}) reads {t!r} with a_twin_m {expected}, but the tensor "
                                   f"holds {'twin codes of m = ' + str(twin[t]) if twin.get(t) else 'plain codes'}")
        if op.kind in TWIN_PRODUCERS:
            for t in op.outputs:
                twin[t] = int(op.attrs.get("twin_m", 0))


def validate(program: Program) -> None:
    """Check structure, order, constants and every op's shapes against the declared tensors."""
    from hwsim.ops import OPS  # registers the op kinds

    _check_constants(program)
    defined = {n for n, s in program.tensors.items() if s.constant}
    for name in program.inputs:
        if name not in program.tensors:
            raise ProgramError(f"program input {name!r} is not a declared tensor")
        defined.add(name)
    names = set()
    for index, op in enumerate(program.ops):
        where = f"op {index} {op.name!r} ({op.kind})"
        if op.name in names:
            raise ProgramError(f"{where}: duplicate op name")
        names.add(op.name)
        if op.kind not in OPS:
            raise ProgramError(f"{where}: unknown op kind; known: {sorted(OPS)}")
        for t in op.inputs:
            if t not in program.tensors:
                raise ProgramError(f"{where}: input {t!r} is not a declared tensor (missing tensor)")
            if t not in defined:
                raise ProgramError(f"{where}: input {t!r} is used before any op computes it")
        for role, const in op.params.items():
            if const not in program.tensors or not program.tensors[const].constant:
                raise ProgramError(f"{where}: parameter {role!r} names {const!r}, which is not a stored constant")
        try:
            shapes = OPS[op.kind].check(op, program, [program.tensors[t].shape for t in op.inputs])
        except (ValueError, KeyError, TypeError) as err:
            raise ProgramError(f"{where}: {err}") from err
        if len(shapes) != len(op.outputs):
            raise ProgramError(f"{where}: computes {len(shapes)} outputs, declares {len(op.outputs)}")
        for t, shape in zip(op.outputs, shapes):
            if t not in program.tensors:
                raise ProgramError(f"{where}: output {t!r} is not a declared tensor (missing tensor)")
            if t in defined:
                raise ProgramError(f"{where}: output {t!r} is computed twice")
            if program.tensors[t].shape != tuple(shape):
                raise ProgramError(f"{where}: output {t!r} has shape {tuple(shape)}, declared {program.tensors[t].shape}")
            defined.add(t)
    for name in program.outputs:
        if name not in defined:
            raise ProgramError(f"program output {name!r} is never computed")
    _check_zero_points(program)
    _check_twin_codes(program)

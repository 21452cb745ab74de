"""A program's bit-widths changed without lowering it again, for pricing many bit-width maps quickly.

The cost model reads shapes and bit-widths, never values, so a program lowered once can be priced at another
mixed-precision map by editing its tensor specs: a layer's ``wbits`` is its weight constant's width and its ``abits``
the width of its activation operands (a log2 softmax operand keeps its code width). An activation is one stored tensor
seen through layout views (Reshape, Permute, Slice, Roll), so the new width is set on the whole alias group. The
result prices as the program lowered at that map would (``tests/hwsim/test_cost.py`` compares the two); it is for
pricing only: its constants still hold the original values.
"""
from __future__ import annotations

import dataclasses

from hwsim.cost.program import ALIASING_KINDS
from hwsim.ir.schema import Program


def alias_groups(program: Program) -> dict[str, set[str]]:
    """Tensor -> every tensor that views the same storage (through layout ops)."""
    root = {t: t for t in program.tensors}
    for op in program.ops:
        if op.kind in ALIASING_KINDS:
            for t in op.outputs:
                root[t] = root[op.inputs[0]]
    groups: dict[str, set[str]] = {}
    for t, r in root.items():
        groups.setdefault(r, set()).add(t)
    return {t: groups[r] for t, r in root.items()}


def with_bits(program: Program, bits: dict[str, dict[str, int]]) -> Program:
    """A copy of ``program`` whose GEMM layers (op names) carry ``bits[layer] = {"wbits": w, "abits": a}``."""
    ops = {op.name: op for op in program.ops}
    unknown = sorted(set(bits) - set(ops))
    if unknown:
        raise KeyError(f"program {program.name!r} has no layers {unknown[:5]}")
    groups = alias_groups(program)
    tensors = dict(program.tensors)
    for layer, b in bits.items():
        op = ops[layer]
        if "wbits" in b and "weight" in op.params:
            tensors[op.params["weight"]] = dataclasses.replace(tensors[op.params["weight"]], bits=int(b["wbits"]))
        if "abits" in b:
            operands = op.inputs[1:] if op.attrs.get("a_log2_bits", 0) else op.inputs
            for t in operands:
                for view in groups[t]:
                    tensors[view] = dataclasses.replace(tensors[view], bits=int(b["abits"]))
    return dataclasses.replace(program, tensors=tensors, metadata={**program.metadata, "bits": bits})

"""A program's bit-widths changed without lowering it again, for pricing many bit-width maps quickly.

The cost model reads shapes and bit-widths, never values, so a program lowered once at a uniform map can be priced at
another mixed-precision map by editing its tensor specs: a layer's ``wbits`` is its weight constant's width and its
``abits`` the width of its activation operands (a log2 softmax operand keeps its code width).

An activation is one stored tensor seen through layout views (Reshape, Permute, Slice, Roll), and several layers may
read views of it (q, k and v of one qkv output). The rule is the lowering's (quant.lower): the stored tensor takes the
widest width its readers want, and every reader that wants a narrower one gets a converter Requant right before it,
named after its quantization site (``<layer>.in`` for a Linear or Conv2d input, ``<layer>.a`` / ``<layer>.b`` for a
MatMul's operands). The result prices as the program lowered at that map would, op for op except zero-cost layout
views (``tests/hwsim/test_cost.py`` compares the two on a mixed map); it is for pricing only: its constants still hold
the original values.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hwsim.cost.program import ALIASING_KINDS
from hwsim.ir.schema import Op, Program, TensorSpec

GEMM_KINDS = ("Linear", "Conv2d", "MatMul")
ACC_BITS = 32


def storage_roots(program: Program) -> dict[str, str]:
    """Tensor -> the tensor whose storage it views (itself unless a layout op made it)."""
    root = {t: t for t in program.tensors}
    for op in program.ops:
        if op.kind in ALIASING_KINDS:
            for t in op.outputs:
                root[t] = root[op.inputs[0]]
    return root


def _activation_operands(op: Op) -> list[tuple[int, str]]:
    """(operand index, tensor) of a GEMM's activation operands: a log2 softmax operand keeps its code width."""
    skip = 1 if op.attrs.get("a_log2_bits", 0) else 0
    return list(enumerate(op.inputs))[skip:]


def _site_name(op: Op, index: int) -> str:
    return f"{op.name}.{'ab'[index]}" if op.kind == "MatMul" else f"{op.name}.in"


def _converters(program: Program) -> list[str]:
    """Requants that narrow a stored code (not an accumulator) into a GEMM operand: present only in mixed programs."""
    gemm_inputs = {t for op in program.ops if op.kind in GEMM_KINDS for t in op.inputs}
    return [op.name for op in program.ops if op.kind == "Requant" and op.outputs[0] in gemm_inputs
            and program.tensors[op.inputs[0]].bits < ACC_BITS
            and program.tensors[op.inputs[0]].bits != program.tensors[op.outputs[0]].bits]


def with_bits(program: Program, bits: dict[str, dict[str, int]]) -> Program:
    """A copy of ``program`` (lowered at a uniform map) whose GEMM layers (op names) carry
    ``bits[layer] = {"wbits": w, "abits": a}``, with the converters the lowering would add."""
    ops = {op.name: op for op in program.ops}
    unknown = sorted(set(bits) - set(ops))
    if unknown:
        raise KeyError(f"program {program.name!r} has no layers {unknown[:5]}")
    converters = _converters(program)
    if converters:
        raise ValueError(f"program {program.name!r} already converts operand widths ({converters[0]}, ...): "
                         "re-bit-width a program lowered at a uniform map")
    tensors = dict(program.tensors)
    root = storage_roots(program)
    views: dict[str, list[str]] = {}
    for t, r in root.items():
        views.setdefault(r, []).append(t)
    readers: dict[str, list[tuple[Op, int, str, int]]] = {}  # storage -> (layer, operand index, view, wanted width)
    for op in program.ops:
        if op.kind not in GEMM_KINDS:
            continue
        b = bits.get(op.name, {})
        if "wbits" in b and "weight" in op.params:
            tensors[op.params["weight"]] = dataclasses.replace(tensors[op.params["weight"]], bits=int(b["wbits"]))
        for i, t in _activation_operands(op):
            readers.setdefault(root[t], []).append((op, i, t, int(b.get("abits", program.tensors[t].bits))))
    insert: dict[str, list[Op]] = {}
    rewired: dict[str, dict[int, str]] = {}
    for storage, reads in readers.items():
        stored = max(w for _, _, _, w in reads)
        for view in views[storage]:
            tensors[view] = dataclasses.replace(tensors[view], bits=stored)
        for op, i, view, wanted in reads:
            if wanted == stored:
                continue
            name = _site_name(op, i)
            out, shift = f"{name}.out", f"{name}.shift"
            tensors[out] = dataclasses.replace(tensors[view], bits=wanted)
            tensors[shift] = TensorSpec(shape=(1,), bits=8, constant=True)
            insert.setdefault(op.name, []).append(Op("Requant", name, (view,), (out,), {"shift": shift},
                                                     {"axis": -1, "mode": "shift"}))
            rewired.setdefault(op.name, {})[i] = out
    new_ops: list[Op] = []
    constants = dict(program.constants)
    for op in program.ops:
        for conv in insert.get(op.name, []):
            new_ops.append(conv)
            constants[conv.params["shift"]] = np.zeros(1, np.int64)
        if op.name in rewired:
            op = dataclasses.replace(op, inputs=tuple(rewired[op.name].get(i, t) for i, t in enumerate(op.inputs)))
        new_ops.append(op)
    return dataclasses.replace(program, tensors=tensors, ops=new_ops, constants=constants,
                               metadata={**program.metadata, "bits": bits})

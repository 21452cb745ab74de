"""Reference execution of a program with hwsim.reference.ops only (int64 numpy), for tensor-by-tensor comparison
against the numba executor's trace. Slow by design."""
from __future__ import annotations

import numpy as np

from hwsim.ir.schema import Op, Program
from hwsim.reference import ops as R


def _per_channel(values: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """Broadcastable view of a per-channel vector along per-sample ``axis`` of batched ``x``."""
    if values.size == 1:
        return values.reshape(())
    shape = [1] * x.ndim
    shape[axis % (x.ndim - 1) + 1 if axis >= 0 else axis] = -1
    return values.reshape(shape)


def _step(op: Op, p: Program, args: list[np.ndarray]) -> np.ndarray:
    out = p.tensors[op.outputs[0]]
    a = op.attrs
    if op.kind == "Linear":
        x = args[0]
        if "input_shift" in op.params:
            x = x * (np.int64(1) << p.param(op, "input_shift"))
        acc = R.matmul(x, p.param(op, "weight"), p.param(op, "bias"))
        return R.saturate(acc, int(a.get("acc_bits", 32)), True)[0]
    if op.kind == "Conv2d":
        acc = R.conv2d(args[0], p.param(op, "weight"), p.param(op, "bias"), int(a.get("stride", 1)), int(a.get("padding", 0)))
        return R.saturate(acc, int(a.get("acc_bits", 32)), True)[0]
    if op.kind == "MatMul":
        lhs, rhs = args
        if a.get("a_log2_bits", 0):
            lhs = R.log2_decode(lhs, int(a["a_log2_bits"]))
        rhs = rhs if a.get("transpose_b", False) else np.swapaxes(rhs, -1, -2)
        return R.saturate(R.matmul(lhs, rhs), int(a.get("acc_bits", 32)), True)[0]
    if op.kind == "Requant":
        axis = int(a.get("axis", -1))
        shift = _per_channel(p.param(op, "shift"), args[0], axis)
        if a.get("mode", "shift") == "dyadic":
            return R.requant_dyadic(args[0], _per_channel(p.param(op, "multiplier"), args[0], axis), shift, out.bits,
                                    out.signed, out.zero_point)
        return R.requant_shift(args[0], shift, out.bits, out.signed, out.zero_point)
    if op.kind == "Add":
        return R.add(args[0], args[1], int(a.get("shift_a", 0)), int(a.get("shift_b", 0)), out.bits)
    if op.kind == "Softmax":
        return R.softmax(args[0], int(a["frac_bits"]), out.bits, bool(a.get("log2", False)))
    if op.kind == "LayerNorm":
        return R.layernorm(args[0], p.param(op, "gamma"), p.param(op, "beta"), p.param(op, "shift"), out.bits)
    if op.kind == "GELU":
        return R.gelu(args[0], int(a["frac_bits"]), int(a.get("sig_bits", 8)))
    if op.kind == "Reshape":
        return args[0].reshape((args[0].shape[0],) + tuple(a["shape"]))
    if op.kind == "Permute":
        return args[0].transpose([0] + [int(i) + 1 for i in a["perm"]])
    if op.kind == "Slice":
        return np.take(args[0], range(int(a["start"]), int(a["stop"])), axis=int(a["axis"]) + 1)
    if op.kind == "Concat":
        batch = max(x.shape[0] for x in args)
        return np.concatenate([np.broadcast_to(x, (batch,) + x.shape[1:]) for x in args], axis=int(a["axis"]) + 1)
    raise ValueError(f"the reference executor has no op {op.kind!r}; add its int64 reference before using it")


def run_reference(program: Program, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor (inputs, constants excluded) computed by the reference ops, keyed by name."""
    values: dict[str, np.ndarray] = {program.inputs[0]: np.asarray(x, np.int64)}
    for op in program.ops:
        args = [values[t] if t in values else program.constants[t][None].astype(np.int64) for t in op.inputs]
        if op.kind == "Add":
            args = list(np.broadcast_arrays(*args))
        values[op.outputs[0]] = _step(op, program, args)
    return values

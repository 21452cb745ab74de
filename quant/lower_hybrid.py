"""Emitters for the ops of hybrid models (quant.lower's registry): SiLU, Hardswish, ReLU, AvgPool2d and the multiply
by a constant. The fake-quant modules they mirror are in quant.hybrid_modules; the integer ops in hwsim.ops.hybrid_ops.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch.fx as fx

from quant.fakequant import SIG_BITS
from quant.hybrid_modules import MUL_CONST_BITS, POOL_FRAC_BITS, const_codes
from quant.lower import ACC_BITS, Lowering, Val, _per_axis, _pot_exp, _to_scale, emitter
from quant.parts import QuantError


@emitter("silu")
def _silu(lw: Lowering, node: fx.Node) -> Val:
    m = lw.module(node)
    x = lw.vals[node.args[0]]
    frac = -_pot_exp(x, m.name)
    scale = np.full(lw.shape(node), 2.0 ** -(frac + SIG_BITS))
    out = lw.op("SiLU", m.name, [x.name], ACC_BITS, True, scale, attrs={"frac_bits": frac, "sig_bits": SIG_BITS})
    return Val(out, scale, ACC_BITS, True, acc=True)


@emitter("hardswish")
def _hardswish(lw: Lowering, node: fx.Node) -> Val:
    m = lw.module(node)
    x = lw.vals[node.args[0]]
    frac = -_pot_exp(x, m.name)
    scale = np.full(lw.shape(node), 2.0 ** (-2 * frac) / 6)
    out = lw.op("Hardswish", m.name, [x.name], ACC_BITS, True, scale, attrs={"frac_bits": frac})
    return Val(out, scale, ACC_BITS, True, acc=True)


@emitter("relu")
def _relu(lw: Lowering, node: fx.Node) -> Val:
    x = lw.vals[node.args[0]]
    if x.name is None or x.log2 or x.twin_m:
        raise QuantError(f"{node.meta['path']}: ReLU takes uniform codes or an accumulator")
    out = lw.op("ReLU", lw.unique(node.meta["path"]), [x.name], x.bits, x.signed, x.scale, zero_point=x.zero_point)
    return replace(x, name=out)


@emitter("avgpool")
def _avgpool(lw: Lowering, node: fx.Node) -> Val:
    m = lw.module(node)
    x = lw.vals[node.args[0]]
    vec, axis = _per_axis(np.broadcast_to(x.scale, lw.b.program.tensors[x.name].shape))
    if axis is not None or x.acc:
        raise QuantError(f"{m.name}: average pooling takes per-tensor input codes")
    scale = np.full(lw.shape(node), float(vec[0]) * 2.0 ** -POOL_FRAC_BITS)
    out = lw.op("AvgPool2d", m.name, [x.name], ACC_BITS, True, scale,
                attrs={"kernel": m.kernel, "stride": m.stride, "padding": m.padding,
                       "count_include_pad": m.count_include_pad, "frac_bits": POOL_FRAC_BITS})
    return Val(out, scale, ACC_BITS, True, acc=True)


@emitter("mul")
def _mul_const(lw: Lowering, node: fx.Node) -> Val:
    m = lw.module(node)
    x, c = lw.vals[node.args[0]], lw.vals[node.args[1]]
    if x.acc or x.name is None or c.const is None:
        raise QuantError(f"{m.name}: a product of input codes and a constant is what lowers")
    shape = lw.shape(node)
    const = c.const
    while const.dim() > len(shape) and const.shape[0] == 1:  # [1, C, 1, 1] beside per-sample [C, H, W]
        const = const[0]
    codes, c_scale = const_codes(const)
    name = lw.b.constant(lw.unique(f"{m.name}.const"), codes.numpy(), MUL_CONST_BITS, True,
                         scale=_to_scale(c_scale.numpy()))
    scale = np.broadcast_to(np.broadcast_to(x.scale, shape) * c_scale.numpy(), shape).copy()
    out = lw.op("Mul", m.name, [x.name, name], ACC_BITS, True, scale)
    return Val(out, scale, ACC_BITS, True, acc=True)

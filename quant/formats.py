"""Scale choice: give every site of a quantized graph its format, asking the method by site role.

Roles (quant.fakequant.ActQuant): ``internal`` sites are 16-bit powers of two covering the observed range (no
clipping; softmax and GELU inputs keep at least 0 fractional bits), in every method, because the integer nonlinear
units take fractional-bit inputs; ``softmax`` sites are the method's log2 codes or uniform 2^-bits codes, or with one
scale per head (a method whose ``softmax_per_head`` is set, Q-ViT) requantized from a ``probs`` site, the softmax's 16-bit 2^-16 grid; the others
(``tensor``, ``ptf``, ``skewed``, ``head``) and the weights are the method's choice.

Every choice depends only on the calibration (the prepared graph, the site's statistics, its consumer's weight, the
partner operand's rows) and the site's bit-width, so ``memo`` (kept by quant.calibrate.Calibration) caches it under
(site, bits): quantizing one calibration at N bit-width maps pays each distinct (site, bits) choice once.
"""
from __future__ import annotations

import torch

from typing import Any, Callable

from quant.fakequant import ActQuant
from quant.observers import Observer
from quant.sites import QuantGraph

Memo = dict[tuple[str, str, int], Any]


def _consumer_weight(qg: QuantGraph, site: ActQuant) -> torch.Tensor | None:
    for g in qg.gemms.values():
        if g.kind == "linear" and g.inputs[0] is site:
            return g.module.weight.detach()
    return None


def assign_formats(qg: QuantGraph, observers: dict[str, Observer], method, memo: Memo | None = None) -> None:
    memo = {} if memo is None else memo

    def cached(kind: str, name: str, bits: int, choose: Callable[[], Any]) -> Any:
        key = (kind, name, bits)
        if key not in memo:
            memo[key] = choose()
        return memo[key]

    for name, site in qg.sites.items():
        obs = observers.get(name)
        if obs is None:
            raise KeyError(f"no calibration statistics for site {name!r}")
        if site.role == "internal":
            exp = method.internal_exp(obs.absmax, site.bits)
            if site.max_exp is not None:
                exp = min(exp, site.max_exp)
            site.set_format(torch.exp2(torch.tensor(float(exp), dtype=torch.float64)))
        elif site.role == "probs":  # the softmax unit's 16-bit uniform probabilities
            site.set_format(torch.exp2(torch.tensor(-float(site.bits), dtype=torch.float64)), signed=False)
        elif site.role == "softmax" and site.per_head:
            heads = _heads(qg, site)
            site.set_format(cached("softmax_heads", name, site.bits, lambda: method.softmax_head_scales(
                obs.sample().reshape(-1, heads, obs.absmax_c.numel() // heads), site.bits)), axis=-3, signed=False)
        elif site.role == "softmax":
            abits = _matmul_abits(qg, site)
            code_bits = method.softmax_code_bits(abits)
            if code_bits is not None:
                site.set_format(torch.ones((), dtype=torch.float64), signed=False, log2=True, bits=code_bits,
                                sqrt2=method.softmax_uses_sqrt2(abits))
                site.eta = cached("eta", name, code_bits, lambda: method.softmax_eta(obs, code_bits))
            else:
                site.set_format(torch.exp2(torch.tensor(-float(site.bits), dtype=torch.float64)), signed=False)
        elif site.role == "tensor":
            site.set_format(cached("tensor", name, site.bits, lambda: method.tensor_scale(
                obs, site.bits, consumer=_consumer_weight(qg, site))))
        elif site.role == "ptf":
            scale, zero = cached("ptf", name, site.bits, lambda: method.ptf_format(
                obs, site.bits, consumer=_consumer_weight(qg, site)))
            site.set_format(scale, axis=-1, zero_point=zero)
        elif site.role == "skewed":
            scale, zero = cached("skewed", name, site.bits, lambda: method.zero_point_scale(
                obs, site.bits, consumer=_consumer_weight(qg, site)))
            site.set_format(scale, zero_point=zero)
        elif site.role == "head":
            site.set_format(cached("head", name, site.bits, lambda: _head_scales(qg, observers, method, name, site)),
                            axis=-3)
        else:
            raise ValueError(f"site {name!r}: unknown role {site.role!r}")
    for g in qg.gemms.values():
        if g.module is None:
            continue
        def choose(g=g) -> torch.Tensor:
            inputs = observers[g.inputs[0].name].sample() if g.kind == "linear" else None
            return method.weight_scale(g.module.weight.detach(), inputs, g.wbits)
        g.module.wq.set_scale(cached("weight", g.name, g.wbits, choose))


def _matmul_abits(qg: QuantGraph, site: ActQuant) -> int:
    """The activation width of the MatMul whose left operand is ``site``."""
    return next(g.abits for g in qg.gemms.values() if g.inputs and g.inputs[0] is site)


def _head_scales(qg: QuantGraph, observers: dict[str, Observer], method, name: str, site: ActQuant) -> torch.Tensor:
    mm, operand = name.rsplit(".", 1)
    partner_name = f"{mm}.{'b' if operand == 'a' else 'a'}"
    obs, partner = observers[name], observers.get(partner_name)
    is_qk = qg.sites[partner_name].role == "head"
    heads = _heads(qg, site)
    rows = obs.sample().reshape(-1, heads, obs.absmax_c.numel() // heads)
    partner_rows = partner.sample().reshape(-1, heads, partner.absmax_c.numel() // heads) if is_qk else None
    absmax = obs.absmax_c.reshape(heads, -1).amax(1)
    return method.per_head_scales(absmax, rows, site.bits, partner_rows)


def _heads(qg: QuantGraph, site: ActQuant) -> int:
    for node in qg.gm.graph.nodes:
        if node.meta.get("kind") == "site" and node.meta.get("path") == site.name:
            return int(node.meta["value1"].shape[-3])
    raise KeyError(site.name)

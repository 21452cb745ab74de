"""Scale choice: give every site of a quantized graph its format, asking the method by site role.

Roles (quant.fakequant.ActQuant): ``internal`` sites are 16-bit powers of two covering the observed range (no
clipping; softmax and GELU inputs keep at least 0 fractional bits), in every method, because the integer nonlinear
units take fractional-bit inputs; ``softmax`` sites are the method's log2 codes or uniform 2^-bits codes; the others
(``tensor``, ``ptf``, ``skewed``, ``head``) and the weights are the method's choice.
"""
from __future__ import annotations

import torch

from quant.fakequant import ActQuant
from quant.observers import Observer
from quant.sites import QuantGraph


def _consumer_weight(qg: QuantGraph, site: ActQuant) -> torch.Tensor | None:
    for g in qg.gemms.values():
        if g.kind == "linear" and g.inputs[0] is site:
            return g.module.weight.detach()
    return None


def assign_formats(qg: QuantGraph, observers: dict[str, Observer], method) -> None:
    for name, site in qg.sites.items():
        obs = observers.get(name)
        if obs is None:
            raise KeyError(f"no calibration statistics for site {name!r}")
        if site.role == "internal":
            exp = method.internal_exp(obs.absmax, site.bits)
            if site.max_exp is not None:
                exp = min(exp, site.max_exp)
            site.set_format(torch.exp2(torch.tensor(float(exp), dtype=torch.float64)))
        elif site.role == "softmax":
            if method.softmax_log2_bits is not None:
                site.set_format(torch.ones((), dtype=torch.float64), signed=False, log2=True,
                                bits=method.softmax_log2_bits)
            else:
                site.set_format(torch.exp2(torch.tensor(-float(site.bits), dtype=torch.float64)), signed=False)
        elif site.role == "tensor":
            site.set_format(method.tensor_scale(obs, site.bits, consumer=_consumer_weight(qg, site)))
        elif site.role == "ptf":
            site.set_format(method.ptf_scale(obs, site.bits, consumer=_consumer_weight(qg, site)), axis=-1)
        elif site.role == "skewed":
            scale, zero = method.zero_point_scale(obs, site.bits, consumer=_consumer_weight(qg, site))
            site.set_format(scale, zero_point=zero)
        elif site.role == "head":
            mm, operand = name.rsplit(".", 1)
            partner_name = f"{mm}.{'b' if operand == 'a' else 'a'}"
            partner = observers.get(partner_name)
            is_qk = qg.sites[partner_name].role == "head"
            heads = _heads(qg, site)
            rows = obs.sample().reshape(-1, heads, obs.absmax_c.numel() // heads)
            partner_rows = partner.sample().reshape(-1, heads, partner.absmax_c.numel() // heads) if is_qk else None
            absmax = obs.absmax_c.reshape(heads, -1).amax(1)
            site.set_format(method.per_head_scales(absmax, rows, site.bits, partner_rows), axis=-3)
        else:
            raise ValueError(f"site {name!r}: unknown role {site.role!r}")
    for g in qg.gemms.values():
        if g.module is None:
            continue
        inputs = observers[g.inputs[0].name].sample() if g.kind == "linear" else None
        g.module.wq.set_scale(method.weight_scale(g.module.weight.detach(), inputs, g.wbits))


def _heads(qg: QuantGraph, site: ActQuant) -> int:
    for node in qg.gm.graph.nodes:
        if node.meta.get("kind") == "site" and node.meta.get("path") == site.name:
            return int(node.meta["value1"].shape[-3])
    raise KeyError(site.name)

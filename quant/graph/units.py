"""Units of the fake-quant graph, the pieces block reconstruction optimises one at a time (BRECQ, Li et al., ICLR
2021; I&S-ViT's block reconstruction; PFCR's fine-to-coarse units).

A unit is a contiguous run of graph nodes chosen by module path: one GEMM layer (``layer``), the attention branch
with its shortcut Add and the MLP branch with its shortcut Add (``branch``: two units per block, PFCR's finest), a
transformer block (``block``), or ``k`` consecutive blocks (``blocks:k``). Blocks are found by name, as everywhere in vitsim: every ``<prefix>.attn.qkv``
starts one (``blocks.3`` in a ViT, ``layers.1.blocks.0`` in a Swin). A unit is extracted as its own
``torch.fx.GraphModule`` whose placeholders are the values it reads from outside and whose output is the one value
it hands on (blocks separated by other layers that read a block's input again, as in a MobileViT, form one unit per
chain of adjacent blocks instead); it calls the same quantizer and layer modules as the whole graph (no copies), so whatever a unit learns
is what the model, and its lowering, use afterwards. ``Unit.prefix`` computes the unit's inputs from the model input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch.fx as fx

from quant.parts import QuantError

GRANULARITIES = ("layer", "branch", "block")
_VALUE_FREE = ("meta",)  # shape arithmetic: recomputed wherever it is needed, never a unit's output


@dataclass
class Unit:
    name: str
    nodes: list[fx.Node]
    inputs: list[fx.Node]
    output: fx.Node
    module: fx.GraphModule      # unit inputs -> unit output
    prefix: fx.GraphModule      # model input -> tuple of the unit inputs


def _extract(gm: fx.GraphModule, nodes: list[fx.Node], outputs: list[fx.Node], keep_placeholders: bool
             ) -> tuple[fx.GraphModule, list[fx.Node]]:
    """A GraphModule running ``nodes`` (graph order) and returning ``outputs`` (one value, or a tuple of several).
    Values read from outside become placeholders (returned in order), except constants (``get_attr``) and shape
    arithmetic, which are copied; with ``keep_placeholders`` the graph's own placeholders are copied too (the prefix
    takes the model input, and may then be a part of the graph that has no nodes but its placeholders)."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    inside = set(nodes)
    inputs: list[fx.Node] = []

    def value(a: fx.Node) -> fx.Node:
        if a not in env:
            # constants are copied; so is shape arithmetic computed outside (Swin's B, H, W of the block input,
            # read again after the attention branch), recomputed from the tensor it reads, never a unit input
            recompute = a.meta.get("kind") in _VALUE_FREE and a not in inside and a.op != "placeholder"
            if a.op == "get_attr" or (keep_placeholders and a.op == "placeholder") or recompute:
                env[a] = graph.node_copy(a, value)
            elif a in inside:
                raise QuantError(f"unit node {a.name} is used before it is computed")
            else:
                env[a] = graph.placeholder(f"in_{len(inputs)}_{a.name}")
                inputs.append(a)
        return env[a]

    for n in nodes:
        env[n] = graph.node_copy(n, value)
    graph.output(env[outputs[0]] if len(outputs) == 1 else tuple(env[o] for o in outputs))
    module = fx.GraphModule(gm, graph)
    module.graph.eliminate_dead_code()
    module.recompile()
    return module, inputs


def _unit(gm: fx.GraphModule, name: str, nodes: list[fx.Node]) -> Unit:
    inside = set(nodes)
    leaving = [n for n in nodes if n.meta.get("kind") not in _VALUE_FREE
               and any(u not in inside for u in n.users)]
    if len(leaving) != 1:
        raise QuantError(f"unit {name}: {len(leaving)} values leave it ({', '.join(n.name for n in leaving)}); a "
                         "reconstruction unit must hand on exactly one")
    module, inputs = _extract(gm, nodes, leaving, keep_placeholders=False)
    order = list(gm.graph.nodes)
    before = order[:order.index(nodes[0])]
    if any(i not in before for i in inputs):
        raise QuantError(f"unit {name} reads a value computed after it starts")
    prefix, _ = _extract(gm, before, inputs, keep_placeholders=True)
    return Unit(name, nodes, inputs, leaving[0], module, prefix)


def block_prefixes(gm: fx.GraphModule) -> list[str]:
    """Module paths of the transformer blocks in graph order (``blocks.0``, ``layers.0.blocks.1``)."""
    out = []
    for n in gm.graph.nodes:
        m = re.fullmatch(r"(.+)\.attn\.qkv", n.meta.get("path", ""))
        if m and n.meta.get("kind") == "linear" and m.group(1) not in out:
            out.append(m.group(1))
    return out


def _run(gm: fx.GraphModule, prefix: str) -> list[fx.Node]:
    """The nodes from the first to the last whose path lies under ``prefix`` (everything in between included)."""
    order = list(gm.graph.nodes)
    idx = [i for i, n in enumerate(order) if n.meta.get("path", "").startswith(prefix + ".")]
    if not idx:
        raise QuantError(f"no node of the graph lies under {prefix!r}")
    return order[idx[0]:idx[-1] + 1]


def _split_at_first_shortcut(nodes: list[fx.Node], prefix: str) -> tuple[list[fx.Node], list[fx.Node]]:
    """A block's nodes cut after its first residual Add (the attention branch and its shortcut) and the rest."""
    for i, n in enumerate(nodes):
        if n.meta.get("kind") == "site" and re.fullmatch(re.escape(prefix) + r"\.add(_\d+)?", n.meta.get("path", "")):
            return nodes[:i + 1], nodes[i + 1:]
    raise QuantError(f"block {prefix} has no residual Add to split at")


def _group_unit(gm: fx.GraphModule, group: list[str]) -> Unit:
    order = list(gm.graph.nodes)
    nodes = order[order.index(_run(gm, group[0])[0]):order.index(_run(gm, group[-1])[-1]) + 1]
    return _unit(gm, group[0] if len(group) == 1 else f"{group[0]}..{group[-1]}", nodes)


def _multi_block_units(gm: fx.GraphModule, group: list[str]) -> list[Unit]:
    """One unit over consecutive blocks; where that unit would hand on several values (a hybrid: MobileViT's
    convolutions between its transformer blocks read the block's input again), one unit per chain of blocks
    with no GEMM between them instead (the transformer blocks of one MobileViT block)."""
    try:
        return [_group_unit(gm, group)]
    except QuantError as err:
        if "values leave it" not in str(err):
            raise
        order = list(gm.graph.nodes)
        chains = [[group[0]]]
        for prev, nxt in zip(group, group[1:]):
            between = order[order.index(_run(gm, prev)[-1]) + 1:order.index(_run(gm, nxt)[0])]
            if any(n.meta.get("kind") in ("linear", "conv2d", "matmul") for n in between):
                chains.append([nxt])
            else:
                chains[-1].append(nxt)
        if len(chains) == 1:
            raise
        return [_group_unit(gm, chain) for chain in chains]


def bridge_prefixes(gm: fx.GraphModule) -> list[str]:
    """Module paths of the bridge blocks of a hybrid (Q-HyViT): the smallest modules that hold both a convolution and
    a transformer block (a MobileViT block: local convolutions, then transformer blocks over its pixels, then the
    fusion convolutions), in graph order."""
    blocks = block_prefixes(gm)
    convs = [n.meta["path"] for n in gm.graph.nodes if n.meta.get("kind") == "conv2d"]
    found: list[str] = []
    for b in blocks:
        parts = b.split(".")
        for k in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:k])
            if any(c.startswith(prefix + ".") for c in convs):
                if prefix not in found:
                    found.append(prefix)
                break
    return found


def bridge_units(gm: fx.GraphModule) -> list[Unit]:
    """One unit per bridge block (``bridge_prefixes``)."""
    return [_unit(gm, prefix, _run(gm, prefix)) for prefix in bridge_prefixes(gm)]


def layer_unit(gm: fx.GraphModule, layer: str) -> Unit:
    """One GEMM with the quantization sites on its inputs."""
    order = list(gm.graph.nodes)
    found = [n for n in order if n.meta.get("path") == layer and n.meta.get("kind") in ("linear", "conv2d", "matmul")]
    if len(found) != 1:
        raise QuantError(f"no GEMM layer named {layer!r} (see `vitsim layers`)")
    node = found[0]
    sites = [a for a in node.all_input_nodes if a.meta.get("kind") == "site"]
    nodes = [n for n in order if n in sites or n is node]
    return _unit(gm, layer, nodes)


def units(gm: fx.GraphModule, granularity: str, layers: list[str] | None = None) -> list[Unit]:
    """The units of ``gm`` at ``granularity`` (see the module docstring), in graph order. ``layer`` units are the
    GEMMs named in ``layers`` (default: every Linear and Conv2d outside the blocks: patch embedding, classifier,
    Swin's patch-merging reductions)."""
    blocks = block_prefixes(gm)
    if granularity == "layer":
        if layers is None:
            layers = [n.meta["path"] for n in gm.graph.nodes if n.meta.get("kind") in ("linear", "conv2d")
                      and not any(n.meta["path"].startswith(b + ".") for b in blocks)]
        return [layer_unit(gm, name) for name in layers]
    m = re.fullmatch(r"blocks:(\d+)", granularity)
    if m:
        k = int(m.group(1))
        if k < 1:
            raise QuantError(f"unit granularity {granularity!r}: want at least one block")
        out = []
        for i in range(0, len(blocks), k):
            out += _multi_block_units(gm, blocks[i:i + k])
        return out
    if granularity not in GRANULARITIES:
        raise QuantError(f"unit granularity {granularity!r}, want one of {GRANULARITIES + ('blocks:K',)}")
    if not blocks:
        raise QuantError("the graph has no transformer blocks (no <prefix>.attn.qkv)")
    out = []
    for b in blocks:
        nodes = _run(gm, b)
        if granularity == "block":
            out.append(_unit(gm, b, nodes))
        else:
            attn, mlp = _split_at_first_shortcut(nodes, b)
            out += [_unit(gm, f"{b}.attn+shortcut", attn), _unit(gm, f"{b}.mlp+shortcut", mlp)]
    return out

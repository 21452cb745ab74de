"""Graph capture: a timm model traced by torch.fx into a graph whose nodes keep the model's module paths.

``capture(model, input_shape)`` returns a ``Captured``: a ``torch.fx.GraphModule`` (a deep copy; the caller's model is
never touched) in which
- timm's fused attention is off, so attention is explicit ``matmul -> softmax -> matmul`` (timm.layers.set_fused_attn);
- every node carries ``meta["kind"]`` (the op vocabulary the quantizer and the lowering know: ``linear``, ``conv2d``
  (any groups), ``matmul``, ``layernorm``, ``gelu``, ``silu``, ``hardswish``, ``relu``, ``softmax``, ``avgpool``, ``add``,
  ``sub``, ``mul`` (a product of two tensors), ``scale`` (multiply or divide by a number), ``mean``, ``sum``, ``layout``,
  ``const``, ``input``, ``output``, ``meta`` for shape arithmetic) and ``meta["path"]``, a stable name built from the
  module path (``blocks.3.attn.qkv``, ``blocks.3.attn.matmul_qk``, ``blocks.3.add_1``);
- identities (Dropout, Identity, DropPath in eval, mask helpers that return their input, contiguous, pad by zero)
  are removed, and the re-parameterisations of quant.graph.reparam applied (attention scale, BatchNorm into the
  convolution before it, LayerScale, global average pooling as a mean, mean pooling into the classifier);
- control flow on traced values (timm's MobileViT checks its map's size) is settled at the traced shapes
  (``_Tracer.to_bool``), and shape assertions are dropped;
- sub-graphs that depend on no image (relative-position bias gathered from its table, Swin's attention mask, the class
  token expanded over the batch) are folded into constant buffers;
- every value records its batch layout from two shape propagations (batch 1 and batch 2): ``meta["bdim"]`` is the axis
  holding the batch and ``meta["per_sample"]`` the per-sample shape the integer program uses. Swin's windows fold the
  batch into a leading axis ``B * nW``: the per-sample shape then keeps that axis with size ``nW``.
- ``meta["value1"]`` holds each node's value for a batch of one (ints for shape arithmetic, tensors otherwise), which
  the lowering uses to evaluate layout ops on per-sample arrays with concrete arguments.

An op with no quantized lowering fails here with one line naming the op and the node (``UnsupportedOp``).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from models._timm import import_timm
from quant.graph import reparam
from quant.parts import QuantError

LEAF_MODULES = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm, torch.nn.GELU, torch.nn.Softmax,
                torch.nn.Dropout, torch.nn.Identity, torch.nn.BatchNorm2d, torch.nn.SiLU, torch.nn.ReLU,
                torch.nn.Hardswish, torch.nn.AdaptiveAvgPool2d, torch.nn.AvgPool2d, torch.nn.Flatten)
# Element-wise activations with an integer kernel (hwsim.kernels.activations), by module class or function.
ACTIVATIONS = {torch.nn.SiLU: "silu", torch.nn.ReLU: "relu", torch.nn.Hardswish: "hardswish",
               torch.nn.functional.silu: "silu", torch.nn.functional.relu: "relu",
               torch.nn.functional.hardswish: "hardswish", torch.relu: "relu"}
IDENTITY_MODULES = (torch.nn.Dropout, torch.nn.Identity)

_LAYOUT_METHODS = {"reshape", "view", "flatten", "permute", "transpose", "contiguous", "unbind", "unsqueeze", "squeeze",
                   "expand", "chunk", "split"}
_LAYOUT_FUNCTIONS = {torch.cat, torch.roll, torch.flatten, torch.permute, torch.transpose, torch.reshape,
                     torch.nn.functional.pad, operator.getitem, torch.unbind}
_SHAPE_FUNCTIONS = {getattr, operator.floordiv, operator.mod, operator.sub, operator.mul, operator.add, operator.eq,
                    operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.neg}


class UnsupportedOp(QuantError):
    """An op of the traced model that has no quantized lowering."""


@dataclass
class Captured:
    """The traced float model and what was learnt about it while tracing."""

    gm: fx.GraphModule
    input_shape: tuple[int, ...]

    def nodes(self, kind: str | None = None) -> list[fx.Node]:
        return [n for n in self.gm.graph.nodes if kind is None or n.meta.get("kind") == kind]

    def node(self, path: str) -> fx.Node:
        for n in self.gm.graph.nodes:
            if n.meta.get("path") == path:
                return n
        raise KeyError(f"no node named {path!r}")

    def module(self, node: fx.Node) -> torch.nn.Module:
        return self.gm.get_submodule(node.target)

    def __reduce__(self) -> tuple:
        """Pickling (a calibration shipped to Dask workers once): torch.fx pickles a GraphModule by tracing its
        generated code again, which drops every node's meta and needs our tracer's example inputs. The graph is copied
        instead (node names and meta kept) and the module rebuilt around it on the other side."""
        graph = fx.Graph()
        out = graph.output(graph.graph_copy(self.gm.graph, {}))
        out.meta = dict(self.gm.graph.find_nodes(op="output")[0].meta)
        root = torch.nn.Module()
        for attr in ("_modules", "_parameters", "_buffers"):
            setattr(root, attr, dict(getattr(self.gm, attr)))
        return _rebuild, (root, graph, self.input_shape)


def _rebuild(root: torch.nn.Module, graph: fx.Graph, input_shape: tuple[int, ...]) -> Captured:
    return Captured(fx.GraphModule(root, graph), input_shape)


class _Tracer(fx.Tracer):
    """torch.fx's tracer with our leaf modules, and control flow on traced values settled at the traced shapes.

    timm's MobileViT block branches on its feature map's size (``if new_h != H: interpolate``), which plain
    symbolic tracing rejects. ``to_bool`` runs the part of the graph the condition depends on for the example
    inputs (batch 1 and batch 2) and takes the branch they take; a condition whose value differs between the two
    batches (it depends on the batch size, or on the data) is refused. The graph is then specialised to the traced
    image size, as the integer program is anyway.
    """

    def __init__(self, examples: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.examples = examples
        self._concrete = False  # evaluating a condition: modules and attributes behave as in eager mode

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if isinstance(m, torch.nn.BatchNorm2d) and type(m) is not torch.nn.BatchNorm2d:
            return False  # timm's BatchNormAct2d: traced through, so its activation becomes a node of its own
        return isinstance(m, LEAF_MODULES) or super().is_leaf_module(m, qualname)

    def call_module(self, m: torch.nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        return forward(*args, **kwargs) if self._concrete else super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        return attr_val if self._concrete else super().getattr(attr, attr_val, parameter_proxy_cache)

    def to_bool(self, obj: fx.Proxy) -> bool:
        needed, stack = set(), [obj.node]
        while stack:
            n = stack.pop()
            if n not in needed:
                needed.add(n)
                stack.extend(n.all_input_nodes)
        graph, env = fx.Graph(), {}
        for n in self.graph.nodes:
            if n in needed:
                env[n] = graph.node_copy(n, lambda a: env[a])
        graph.output(env[obj.node])
        self._concrete = True  # before building the module: copying attributes must not record graph nodes
        try:
            part = fx.GraphModule(self.root, graph)
            with torch.no_grad():
                taken = {bool(part(x)) for x in self.examples}
        finally:
            self._concrete = False
        if len(taken) != 1:
            raise UnsupportedOp(f"control flow on {obj.node.name} depends on the batch size")
        return taken.pop()


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps every node's value."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        return out


def _record(gm: fx.GraphModule, x: torch.Tensor) -> dict[fx.Node, Any]:
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(x)
    return rec.values


def _is_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


def _tensor_inputs(n: fx.Node, values: dict[fx.Node, Any]) -> list[fx.Node]:
    return [a for a in n.all_input_nodes if _is_tensor(values.get(a)) or
            isinstance(values.get(a), (tuple, list)) and any(_is_tensor(t) for t in values[a])]


def _classify(n: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> str:
    v = values.get(n)
    if n.op == "placeholder":
        return "input" if _is_tensor(v) else "meta"
    if n.op == "output":
        return "output"
    if n.op == "get_attr":
        return "const"
    tensorish = _is_tensor(v) or isinstance(v, (tuple, list)) and any(_is_tensor(t) for t in v)
    if not tensorish:
        return "meta"
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        if type(m) in ACTIVATIONS:
            return ACTIVATIONS[type(m)]
        if isinstance(m, torch.nn.Flatten):
            return "layout"
        if isinstance(m, torch.nn.AvgPool2d):
            return "avgpool"
        for cls, kind in ((torch.nn.Linear, "linear"), (torch.nn.Conv2d, "conv2d"), (torch.nn.LayerNorm, "layernorm"),
                          (torch.nn.GELU, "gelu"), (torch.nn.Softmax, "softmax")):
            if isinstance(m, cls):
                return kind
        return "unknown"
    target = n.target
    if n.op == "call_method":
        if target in _LAYOUT_METHODS:
            return "layout"
        if target == "softmax":
            return "softmax"
        if target in ("mean", "sum"):
            return target
        if target in ("add", "sub", "mul", "matmul", "div"):
            target = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "matmul": operator.matmul,
                      "div": operator.truediv}[target]
    if target in (operator.matmul, torch.matmul):
        return "matmul"
    if target in (operator.add, torch.add):
        return "add"
    if target in (operator.sub, torch.sub):
        return "sub"
    tensors = [a for a in n.args if isinstance(a, fx.Node) and _is_tensor(values.get(a))]
    if target in (operator.mul, torch.mul):
        return "scale" if len(tensors) == 1 else "mul"
    if target in (operator.truediv, torch.div) and len(tensors) == 1 and n.args[0] is tensors[0] \
            and isinstance(n.args[1], (int, float)) and not n.kwargs:
        return "scale"
    if target is torch.mean:
        return "mean"
    if target is torch.sum:
        return "sum"
    if target is torch.nn.functional.softmax:
        return "softmax"
    if target in _LAYOUT_FUNCTIONS:
        return "layout"
    if target in ACTIVATIONS:
        return ACTIVATIONS[target]
    if n.op == "call_method" and target in ("relu", "sigmoid"):
        return "relu" if target == "relu" else "unknown"
    return "unknown"


def _op_label(n: fx.Node) -> str:
    t = n.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _module_path(n: fx.Node) -> str:
    stack = n.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else ""


def _remove_identities(gm: fx.GraphModule, values: dict[fx.Node, Any], values2: dict[fx.Node, Any]) -> None:
    """Drop nodes that return one of their inputs unchanged (Dropout/Identity in eval, contiguous, mask helpers, and
    layout ops that change nothing at either batch size: Swin's pad by zero and crop to the full size)."""
    for n in gm.graph.nodes:  # without the contiguous copies a view may no longer fit the strides
        if n.op == "call_method" and n.target == "view":
            n.target = "reshape"
    for n in list(gm.graph.nodes):
        if n.op in ("placeholder", "output", "get_attr"):
            continue
        is_identity = n.op == "call_module" and isinstance(gm.get_submodule(n.target), IDENTITY_MODULES)
        is_identity |= n.op == "call_method" and n.target == "contiguous"
        is_identity |= (n.target in (operator.mul, torch.mul, "mul") and len(n.args) == 2 and 1.0 in n.args[1:]
                        and isinstance(n.args[0], fx.Node))
        if not is_identity and _is_tensor(values.get(n)):
            # A wrapped helper that hands back its input object (timm's maybe_add_mask with no mask, pad by zero).
            same = [a for a in n.all_input_nodes if values.get(a) is values[n]]
            is_identity = len(same) == 1 and n.op == "call_function"
            if is_identity:
                n.replace_all_uses_with(same[0])
                gm.graph.erase_node(n)
                continue
        if not is_identity and _is_layout(n) and isinstance(n.args[0], fx.Node):
            src = n.args[0]
            is_identity = all(_is_tensor(vals.get(n)) and _is_tensor(vals.get(src)) and vals[n].shape == vals[src].shape
                              and torch.equal(vals[n], vals[src]) for vals in (values, values2))
        if is_identity:
            n.replace_all_uses_with(n.args[0])
            gm.graph.erase_node(n)
    gm.graph.eliminate_dead_code()


def _is_layout(n: fx.Node) -> bool:
    return n.op == "call_method" and n.target in _LAYOUT_METHODS or n.op == "call_function" and n.target in _LAYOUT_FUNCTIONS


def _data_dependent(gm: fx.GraphModule, values: dict[fx.Node, Any]) -> set[fx.Node]:
    dep: set[fx.Node] = set()
    for n in gm.graph.nodes:
        if n.op == "placeholder" or any(a in dep for a in _tensor_inputs(n, values)):
            dep.add(n)
    return dep


def _fold_constants(gm: fx.GraphModule, values: dict[fx.Node, Any], values2: dict[fx.Node, Any]) -> None:
    """Replace tensor nodes that depend on no image by buffers holding their per-sample value."""
    dep = _data_dependent(gm, values)
    count = 0
    for n in list(gm.graph.nodes):
        if n in dep or n.op in ("get_attr", "output") or not _is_tensor(values.get(n)):
            continue
        if not any(u in dep for u in n.users):
            continue  # only the frontier of a constant sub-graph needs a buffer
        v1, v2 = values[n], values2[n]
        if v1.shape != v2.shape:  # expanded over the batch (class token): stays a node, lowered as a constant
            continue
        value = v1
        name = f"_folded_{count}"
        count += 1
        gm.register_buffer(name, value.detach().clone())
        with gm.graph.inserting_before(n):
            new = gm.graph.get_attr(name)
        new.meta.update(n.meta)
        n.replace_all_uses_with(new)
        values[new], values2[new] = value, v2
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()


def _batch_axis(s1: torch.Size, s2: torch.Size) -> tuple[int, int]:
    """(axis holding the batch, samples' share of it) from the shapes at batch 1 and batch 2."""
    diff = [i for i, (a, b) in enumerate(zip(s1, s2)) if a != b]
    if len(s1) != len(s2) or len(diff) != 1 or s2[diff[0]] != 2 * s1[diff[0]]:
        raise UnsupportedOp(f"cannot tell the batch axis of a tensor shaped {tuple(s1)} (batch 1) / {tuple(s2)} (batch 2)")
    return diff[0], s1[diff[0]]


def _layouts(gm: fx.GraphModule, values: dict[fx.Node, Any], values2: dict[fx.Node, Any]) -> None:
    dep = _data_dependent(gm, values)
    for n in gm.graph.nodes:
        v1, v2 = values.get(n), values2.get(n)
        n.meta["value1"] = v1
        if not _is_tensor(v1):
            continue
        n.meta["const"] = n not in dep
        if n not in dep and v1.shape == v2.shape:  # a constant: its stored value is per sample already
            n.meta["bdim"], n.meta["per_sample"] = None, tuple(v1.shape)
            continue
        axis, share = _batch_axis(v1.shape, v2.shape)  # data, or a constant expanded over the batch
        n.meta["bdim"] = axis
        n.meta["per_sample"] = tuple(v1.shape) if share > 1 else tuple(s for i, s in enumerate(v1.shape) if i != axis)


def _name_nodes(gm: fx.GraphModule) -> None:
    """Stable names: the module path for module calls, else the enclosing module's path plus the op and a count."""
    used: dict[str, int] = {}
    for n in gm.graph.nodes:
        kind = n.meta.get("kind")
        if n.op == "call_module":
            base = n.target
        elif kind in ("input", "output"):
            base = kind
        else:
            label = {"matmul": "matmul", "add": "add", "softmax": "softmax", "mean": "mean", "sum": "sum",
                     "scale": "mul"}.get(
                kind, _op_label(n))
            if kind == "matmul":
                label = _matmul_label(n)
            prefix = _module_path(n)
            base = f"{prefix}.{label}" if prefix else label
        count = used.get(base, 0)
        used[base] = count + 1
        n.meta["path"] = base if count == 0 else f"{base}_{count}"


def _matmul_label(n: fx.Node) -> str:
    """``matmul_av`` when the left operand comes from a softmax, ``matmul_qk`` when the right one is transposed."""
    def source(x: fx.Node) -> fx.Node:
        while x.meta.get("kind") in ("layout", "scale") and x.all_input_nodes:
            x = x.all_input_nodes[0]
        return x

    a, b = n.args[0], n.args[1]
    if isinstance(a, fx.Node) and source(a).meta.get("kind") == "softmax":
        return "matmul_av"
    if isinstance(b, fx.Node) and b.meta.get("kind") == "layout" and _op_label(b) in ("transpose", "permute"):
        return "matmul_qk"
    return "matmul"


def capture(model: torch.nn.Module, input_shape: tuple[int, ...]) -> Captured:
    """Trace a deep copy of ``model`` (eval mode, float32) for images of ``input_shape`` (C, H, W)."""
    import copy

    timm = import_timm()
    timm.layers.set_fused_attn(False)
    model = copy.deepcopy(model).eval().float()
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
        if getattr(m, "inplace", False) is True:  # an in-place activation would look like an identity below
            m.inplace = False
    reparam.fold_attention_scale(model)
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn((1, *input_shape), generator=gen)
    x2 = torch.randn((2, *input_shape), generator=gen)
    try:
        graph = _Tracer((x1, x2)).trace(model, concrete_args=_concrete_args(model))
    except UnsupportedOp:
        raise
    except Exception as err:  # torch.fx raises many types; the user needs one line
        raise UnsupportedOp(f"{type(model).__name__}: torch.fx cannot trace it ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''})") from None
    gm = fx.GraphModule(model, graph)
    for n in list(gm.graph.nodes):  # shape assertions (timm's BatchNormAct2d): the traced shapes are fixed
        if n.op == "call_function" and n.target is torch._assert:
            gm.graph.erase_node(n)
    gm.graph.eliminate_dead_code()  # the settled conditions
    reparam.fold_batchnorm(gm)
    reparam.pool_to_mean(gm)
    gm.recompile()
    values, values2 = _record(gm, x1), _record(gm, x2)
    _remove_identities(gm, values, values2)
    _fold_constants(gm, values, values2)
    reparam.fold_channel_scales(gm)
    reparam.fold_mean_into_linear(gm, values)
    gm.recompile()
    values, values2 = _record(gm, x1), _record(gm, x2)
    for n in gm.graph.nodes:
        n.meta["kind"] = _classify(n, gm, values)
    _layouts(gm, values, values2)
    _name_nodes(gm)
    for n in gm.graph.nodes:
        if n.meta["kind"] == "unknown":
            raise UnsupportedOp(f"{type(model).__name__}: op {_op_label(n)!r} at node {n.meta['path']} "
                                f"({n.op}) has no integer lowering")
    return Captured(gm, tuple(input_shape))


def _concrete_args(model: torch.nn.Module) -> dict[str, Any] | None:
    """Optional forward arguments (attention masks, flags) fixed to their defaults so they trace as constants."""
    import inspect

    params = list(inspect.signature(model.forward).parameters.values())[1:]
    fixed = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return fixed or None

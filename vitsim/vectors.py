"""``vitsim vectors``: golden vectors of an integer program's ops for anyone's testbench (docs/vectors.md).

For each op of one transformer block (or one op of it), hwsim's values on the program's first test images: every
input operand, every constant the op reads (weights, biases, shifts, multipliers, the nonlinear units' constants)
and every output (a GEMM op's output is its int32 accumulator; the ``Requant`` after it is an op of its own), as
``$readmemh`` text (two's complement at the tensor's declared width, one word per line, row-major, images first) and
as ``.npy``, with ``manifest.json`` saying each tensor's shape, width, signedness, zero point and scale and each op's
attributes and integer semantics (a section of docs/vectors.md per op kind).

Deterministic: the same program, images and options give byte-identical files (no timestamps, sorted keys).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.executor import quantize_input, run
from hwsim.ir import load
from hwsim.ir.schema import Op, Program, TensorSpec
from rtl.hexfile import write_hex
from rtl.layers import block_prefixes

FORMATS = ("hex", "npy", "both")
DOCS = "docs/vectors.md"


class VectorsError(ValueError):
    """A layer, block or option the program does not have (a user error)."""


def input_images(program: Program, count: int) -> tuple[np.ndarray, str]:
    """(integer input codes [count, ...], where they came from): the first ``count`` test images of the program's
    dataset, or seeded normal noise when it has none."""
    recipe = program.metadata.get("recipe") or {}
    if recipe.get("data") == "fmnist":
        from models import fmnist

        images, _ = fmnist.load_split("test", recipe.get("root"))
        return quantize_input(program, fmnist.normalize(images[:count])), f"fmnist test images 0..{count - 1}"
    spec = program.spec(program.inputs[0])
    x = np.random.default_rng(0).standard_normal((count, *spec.shape)).astype(np.float32)
    return quantize_input(program, x), "standard normal noise, numpy default_rng(0)"


def select_ops(program: Program, block: int, layer: str) -> list[Op]:
    """The block's ops in program order; with ``layer`` other than 'all', the op named ``layer`` in full, relative to
    the block (``attn.qkv``) or by its last name parts (``qkv``, ``norm1``, ``matmul_qk.a``)."""
    prefixes = block_prefixes(program)
    if not 0 <= block < len(prefixes):
        raise VectorsError(f"block {block} out of range: the program has {len(prefixes)} transformer blocks")
    prefix = prefixes[block] + "."
    ops = [op for op in program.ops if op.name.startswith(prefix)]
    if layer == "all":
        return ops
    chosen = [op for op in ops if op.name in (layer, prefix + layer) or op.name.endswith("." + layer)]
    if not chosen:
        names = ", ".join(op.name[len(prefix):] for op in ops)
        raise VectorsError(f"no op {layer!r} in block {block} ({prefix[:-1]}); its ops: {names}")
    return chosen


def _file_stem(op_name: str, role: str) -> str:
    """``<op name>/<role>``: one folder per op."""
    return "/".join(re.sub(r"[^A-Za-z0-9_.-]", "_", part) for part in (op_name, role))


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {"shape": list(spec.shape), "bits": spec.bits, "signed": spec.signed, "zero_point": spec.zero_point,
            "exp": spec.exp, "channel_exps": list(spec.channel_exps) if spec.channel_exps is not None else None,
            "axis": spec.axis, "scale": spec.scale, "constant": spec.constant, "qmin": spec.qmin, "qmax": spec.qmax}


def _write(out: Path, stem: str, values: np.ndarray, bits: int, fmt: str) -> dict[str, str]:
    files = {kind: f"{stem}.{kind}" for kind in ("hex", "npy") if fmt in (kind, "both")}
    (out / stem).parent.mkdir(parents=True, exist_ok=True)
    if "hex" in files:
        write_hex(out / files["hex"], values, bits)
    if "npy" in files:
        np.save(out / files["npy"], np.ascontiguousarray(values, dtype=np.int64))
    return files


def _tensor(out: Path, op: Op, role: str, name: str, values: np.ndarray, spec: TensorSpec, fmt: str,
            per_image: bool) -> dict[str, Any]:
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    return {"role": role, "tensor": name, **_spec_json(spec),
            "array_shape": list(values.shape), "per_image": per_image, "min": lo, "max": hi,
            "files": _write(out, _file_stem(op.name, role), values, spec.bits, fmt)}


def export_vectors(path: str | Path, out_dir: str | Path, layer: str = "all", block: int = 0, images: int = 1,
                   fmt: str = "both", progress: bool = False) -> dict[str, Any]:
    """Write the vectors and ``manifest.json`` under ``out_dir``; returns the manifest."""
    if fmt not in FORMATS:
        raise VectorsError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if images < 1:
        raise VectorsError("--images must be at least 1")
    program = load(path)
    ops = select_ops(program, block, layer)
    x, source = input_images(program, images)
    trace = run(program, x, trace=True).trace
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from models.progress import progress as show

    entries = []
    for op in show(ops, "vectors", "op", progress):
        tensors = []
        for i, name in enumerate(op.inputs):
            const = name in program.constants
            values = program.constants[name] if const else trace[name]
            tensors.append(_tensor(out, op, f"in{i}", name, values, program.spec(name), fmt, not const))
        for role, name in sorted(op.params.items()):
            tensors.append(_tensor(out, op, role, name, program.constants[name], program.spec(name), fmt, False))
        for i, name in enumerate(op.outputs):
            tensors.append(_tensor(out, op, f"out{i}", name, trace[name], program.spec(name), fmt, True))
        entries.append({"name": op.name, "kind": op.kind, "semantics": f"{DOCS}#{op.kind.lower()}",
                        "attrs": op.attrs, "tensors": tensors})
    manifest = {"program": program.name, "program_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                "block": block, "layer": layer, "images": images, "image_source": source, "format": fmt,
                "layout": "row-major (C order), images leading for per-image tensors; hex: one two's-complement "
                          "word of ceil(bits / 4) digits per line ($readmemh)",
                "docs": DOCS, "ops": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=_plain) + "\n")
    return manifest


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in op attributes as JSON numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

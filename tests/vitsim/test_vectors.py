"""``vitsim vectors`` (vitsim/vectors.py): the files say what docs/vectors.md says they say, byte for byte the same on
every run, and they are the values the ops really read and write."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hwsim.ir import save
from tests.vitsim.test_cli import run_cli
from vitsim.vectors import VectorsError, export_vectors


@pytest.fixture(scope="module")
def w4a4_file(p2vit_programs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vectors") / "p2vit_w4a4.vitp"
    save(p2vit_programs[(4, 4)], path)
    return path


def _decode_hex(path: Path, bits: int, signed: bool) -> np.ndarray:
    """docs/vectors.md's hex format, read back independently: ceil(bits/4) digits a line, two's complement."""
    lines = path.read_text().splitlines()
    assert all(len(line) == (bits + 3) // 4 for line in lines), path
    words = np.array([int(line, 16) for line in lines], dtype=object)
    if signed:
        words = np.array([w - (1 << bits) if w >= 1 << (bits - 1) else w for w in words], dtype=object)
    return words.astype(np.int64)


def _rs(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Round-half-up shift of docs/vectors.md, written out: a right shift for s > 0, a left shift otherwise."""
    s = np.broadcast_to(s, x.shape).astype(np.int64)
    out = np.empty_like(x)
    pos = s > 0
    out[pos] = (x[pos] + (np.int64(1) << (s[pos] - 1))) >> s[pos]
    out[~pos] = x[~pos] << -s[~pos]
    return out


def test_vectors_are_deterministic_and_the_hex_is_the_npy(w4a4_file, tmp_path):
    """Two exports are byte-identical (manifest included); every hex file decodes, by the documented format, to its
    .npy, in the documented shape and range. A wrong mask, digit count or sign extension fails here."""
    a = export_vectors(w4a4_file, tmp_path / "a", images=2)
    export_vectors(w4a4_file, tmp_path / "b", images=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == json.loads(json.dumps(a))
    kinds = {op["kind"] for op in a["ops"]}
    assert {"LayerNorm", "Linear", "Requant", "MatMul", "Softmax", "GELU", "Add"} <= kinds
    negative = False
    for op in a["ops"]:
        for t in op["tensors"]:
            npy = np.load(tmp_path / "a" / t["files"]["npy"])
            assert list(npy.shape) == t["array_shape"]
            assert t["array_shape"] == ([2] if t["per_image"] else []) + t["shape"]
            hexv = _decode_hex(tmp_path / "a" / t["files"]["hex"], t["bits"], t["signed"])
            assert np.array_equal(hexv, npy.ravel()), (op["name"], t["role"])
            assert t["min"] == npy.min() and t["max"] == npy.max()
            negative |= t["min"] < 0
            if not t["constant"]:
                assert t["qmin"] <= t["min"] and t["max"] <= t["qmax"], (op["name"], t["role"])
    assert negative  # two's complement was exercised


def test_vectors_are_what_the_ops_compute(w4a4_file, tmp_path):
    """From the files alone and docs/vectors.md's formulas (plain int64 numpy): the qkv Linear's accumulator from its
    input, PTF shifts, weights and bias, and its Requant from that accumulator. An export that wrote the wrong tensor
    (an op's input from another op, a constant under the wrong role, the output before saturation) fails."""
    m = export_vectors(w4a4_file, tmp_path, layer="all", images=2, fmt="npy")
    ops = {op["name"]: op for op in m["ops"]}

    def arrays(name):
        return {t["role"]: np.load(tmp_path / t["files"]["npy"]) for t in ops[name]["tensors"]}

    lin = arrays("blocks.0.attn.qkv")
    assert "input_shift" in lin  # P2-ViT's PTF input: the shifts are part of the contract
    acc = (lin["in0"] << lin["input_shift"]) @ lin["weight"].T + lin["bias"]
    assert np.array_equal(acc, lin["out0"])
    req = arrays("blocks.0.attn.qkv.requant")
    assert np.array_equal(req["in0"], lin["out0"])
    spec = next(t for t in ops["blocks.0.attn.qkv.requant"]["tensors"] if t["role"] == "out0")
    want = np.clip(_rs(req["in0"], req["shift"]) + spec["zero_point"], spec["qmin"], spec["qmax"])
    assert np.array_equal(want, req["out0"])
    # the next op reads what this one wrote: the files chain
    assert np.array_equal(arrays("blocks.0.attn.reshape")["in0"], req["out0"])


def test_one_layer_and_user_errors(w4a4_file, tmp_path):
    m = export_vectors(w4a4_file, tmp_path / "one", layer="norm1", fmt="hex")
    assert [op["name"] for op in m["ops"]] == ["blocks.0.norm1"]
    assert not list((tmp_path / "one").rglob("*.npy"))
    with pytest.raises(VectorsError, match="no op 'nope' in block 0"):
        export_vectors(w4a4_file, tmp_path / "x", layer="nope")
    res = run_cli("vectors", str(w4a4_file), "--out", str(tmp_path / "y"), "--block", "99")
    assert res.returncode == 2 and "block 99 out of range" in res.stderr
    res = run_cli("vectors", str(w4a4_file), "--out", str(tmp_path / "z"), "--layer", "fc1", "--json")
    assert res.returncode == 0 and [op["name"] for op in json.loads(res.stdout)["ops"]] == ["blocks.0.mlp.fc1"]

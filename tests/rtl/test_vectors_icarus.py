"""Golden vectors taken into a plain Verilog testbench (tests/hdl/tb_*.v, Icarus, no cocotb, no Python model): each
testbench was written from docs/vectors.md alone and gets its parameters and files from manifest.json alone. Every
op of deit_fmnist's block 0 (P2-ViT W4A4, on a Fashion-MNIST test image) but data movement must pass: Linear,
MatMul (log2 softmax codes included), Requant, Add, LayerNorm, Softmax, GELU; and a word changed in an expected
output must be reported at its index."""
from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest

from hwsim.ir import save
from rtl.runner import check_simulator
from vitsim.vectors import export_vectors

HDL = Path(__file__).resolve().parent.parent / "hdl"
# No skip when Icarus is missing: like every RTL test, this must run in CI (make setup installs Icarus), so a missing
# simulator fails here.
pytestmark = pytest.mark.rtl


def _tensors(op: dict) -> dict[str, dict]:
    return {t["role"]: t for t in op["tensors"]}


def _params(op: dict) -> tuple[str, dict[str, int]] | None:
    """(testbench, parameters) for ``op`` from its manifest entry, or None for kinds these testbenches leave out."""
    t, attrs = _tensors(op), op["attrs"]
    kind = op["kind"]
    if kind == "Linear" and not attrs.get("a_twin_m"):
        x, w, y = t["in0"], t["weight"], t["out0"]
        return "tb_linear", {
            "ROWS": math.prod(x["array_shape"][:-1]), "K": w["shape"][1], "N": w["shape"][0],
            "X_BITS": x["bits"], "X_SIGNED": int(x["signed"]), "W_BITS": w["bits"], "O_BITS": y["bits"],
            "B_BITS": t["bias"]["bits"] if "bias" in t else 32, "HAS_BIAS": int("bias" in t),
            "S_BITS": t["input_shift"]["bits"] if "input_shift" in t else 8, "HAS_SHIFT": int("input_shift" in t),
            "ACC_BITS": attrs.get("acc_bits", 32)}
    if kind == "MatMul" and not attrs.get("a_sqrt2") and not attrs.get("a_eta") and not attrs.get("a_twin_m"):
        a, b, y = t["in0"], t["in1"], t["out0"]
        transpose = bool(attrs.get("transpose_b", False))
        return "tb_matmul", {
            "HEADS": math.prod(a["array_shape"][:-2]), "M": a["shape"][-2], "K": a["shape"][-1],
            "N": b["shape"][-2] if transpose else b["shape"][-1], "TRANSPOSE_B": int(transpose),
            "LOG2_BITS": attrs.get("a_log2_bits", 0), "A_BITS": a["bits"], "A_SIGNED": int(a["signed"]),
            "B_BITS": b["bits"], "O_BITS": y["bits"], "ACC_BITS": attrs.get("acc_bits", 32)}
    if kind == "Requant" and not attrs.get("twin_m"):
        x, s, y = t["in0"], t["shift"], t["out0"]
        channels = s["shape"][0] if s["shape"] else 1
        axis = attrs.get("axis", -1) % len(x["shape"])
        inner = math.prod(x["shape"][axis + 1:]) if channels > 1 else 1
        return "tb_requant", {
            "TOTAL": math.prod(x["array_shape"]), "C": channels, "INNER": inner,
            "DYADIC": int(attrs.get("mode", "shift") == "dyadic"), "X_BITS": x["bits"], "S_BITS": s["bits"],
            "M_BITS": t["multiplier"]["bits"] if "multiplier" in t else 32, "O_BITS": y["bits"],
            "O_SIGNED": int(y["signed"]), "ZERO_POINT": y["zero_point"], "QMIN": y["qmin"], "QMAX": y["qmax"]}
    if kind == "Add" and t["in0"]["array_shape"] == t["in1"]["array_shape"]:
        y = t["out0"]
        return "tb_add", {
            "TOTAL": math.prod(y["array_shape"]), "A_BITS": t["in0"]["bits"], "B_BITS": t["in1"]["bits"],
            "O_BITS": y["bits"], "SHIFT_A": attrs.get("shift_a", 0), "SHIFT_B": attrs.get("shift_b", 0),
            "SUBTRACT": int(attrs.get("subtract", False)), "QMIN": y["qmin"], "QMAX": y["qmax"]}
    if kind == "LayerNorm":
        x, y = t["in0"], t["out0"]
        return "tb_layernorm", {
            "ROWS": math.prod(x["array_shape"][:-1]), "C": x["shape"][-1], "X_BITS": x["bits"],
            "G_BITS": t["gamma"]["bits"], "BETA_BITS": t["beta"]["bits"], "S_BITS": t["shift"]["bits"],
            "O_BITS": y["bits"], "QMIN": y["qmin"], "QMAX": y["qmax"]}
    if kind == "Softmax" and not attrs.get("eta") and not attrs.get("twin_m"):
        x, y = t["in0"], t["out0"]
        return "tb_softmax", {
            "ROWS": math.prod(x["array_shape"][:-1]), "N": x["shape"][-1], "X_BITS": x["bits"],
            "FRAC": attrs["frac_bits"], "O_BITS": y["bits"],
            "MODE": 0 if not attrs.get("log2") else (2 if attrs.get("sqrt2") else 1)}
    if kind == "GELU":
        x, y = t["in0"], t["out0"]
        return "tb_gelu", {"TOTAL": math.prod(x["array_shape"]), "X_BITS": x["bits"], "FRAC": attrs["frac_bits"],
                           "SIG": attrs.get("sig_bits", 8), "O_BITS": y["bits"]}
    return None


def _run(tb: str, params: dict[str, int], op: dict, root: Path, work: Path) -> str:
    check_simulator("icarus")   # SimulatorMissing, with what to do, rather than a bare FileNotFoundError
    binary = work / f"{tb}.vvp"
    args = [f"-P{tb}.{k}={v}" for k, v in params.items()]
    subprocess.run(["iverilog", "-g2012", "-I", str(HDL), *args, "-o", str(binary), str(HDL / f"{tb}.v")],
                   check=True, capture_output=True, text=True)
    plus = [f"+{t['role']}={root / t['files']['hex']}" for t in op["tensors"]]
    return subprocess.run(["vvp", "-n", str(binary), *plus], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def block0(p2vit_programs, tmp_path_factory):
    program = p2vit_programs[(4, 4)]
    program.metadata = {**program.metadata, "recipe": {"data": "fmnist"}}   # the vectors on a real test image
    root = tmp_path_factory.mktemp("vectors_icarus")
    save(program, root / "p2vit_w4a4.vitp")
    return root / "vec", export_vectors(root / "p2vit_w4a4.vitp", root / "vec", images=1, fmt="hex")


def test_plain_icarus_testbenches_pass_on_the_block0_vectors(block0, tmp_path):
    root, manifest = block0
    assert manifest["image_source"] == "fmnist test images 0..0"
    checked = {}
    for op in manifest["ops"]:
        plan = _params(op)
        if plan is None:
            continue
        out = _run(*plan, op, root, tmp_path)
        assert "RESULT PASS" in out, (op["name"], out)
        checked[op["kind"]] = checked.get(op["kind"], 0) + 1
    # every op of the block but data movement (reshape, permute, slice)
    assert checked == {"LayerNorm": 2, "Linear": 4, "MatMul": 2, "Requant": 7, "Add": 2, "Softmax": 1, "GELU": 1}, checked


def test_a_changed_expected_word_is_reported_at_its_index(block0, tmp_path):
    root, manifest = block0
    op = next(o for o in manifest["ops"] if o["name"] == "blocks.0.attn.qkv")
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    out0 = bad / _tensors(op)["out0"]["files"]["hex"]
    words = out0.read_text().splitlines()
    words[37] = format((int(words[37], 16) + 1) % (1 << 32), "08x")
    out0.write_text("\n".join(words) + "\n")
    out = _run(*_params(op), op, bad, tmp_path)
    assert "RESULT FAIL errors=1" in out and "FIRST_MISMATCH index=37" in out, out

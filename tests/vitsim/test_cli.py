"""The command line: --json output parses and carries the promised keys; bad input exits 2 and writes nothing."""
from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pytest

from vitsim.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitsim", *args], capture_output=True, text=True)


def test_eval_json(capsys):
    assert main(["eval", "--model", "deit_fmnist", "--limit", "300", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == "deit_fmnist" and r["n"] == 300 and 0.0 <= r["top1"] <= 1.0


def test_quantize_and_simulate_json(tmp_path, capsys):
    out = tmp_path / "w8a8.vitp"
    assert main(["quantize", "--model", "deit_fmnist", "--method", "p2vit", "--wbits", "8", "--abits", "8",
                 "--calib", "64", "--limit", "200", "--out", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"fp32_top1", "quant_top1", "int_top1", "agreement", "method", "wbits", "abits", "out"} <= set(r)
    assert r["out"] == str(out) and out.exists() and r["agreement"] >= 0.99
    assert main(["simulate", str(out), "--limit", "200", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert {"top1", "agreement", "images_per_s", "overflows", "n"} <= set(s)
    assert s["n"] == 200 and s["top1"] == r["int_top1"] and s["agreement"] == r["agreement"] and "warning" not in s
    assert main(["cost", str(out), "--hw", "edge-8x8", "--set", "units.softmax=2", "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["hw"] == "edge-8x8" and c["totals"]["cycles"] >= c["totals"]["compute_cycles"] > 0
    assert {o["name"] for o in c["ops"]} >= {"blocks.0.attn.qkv", "blocks.0.attn.softmax", "head"}
    bad = run_cli("cost", str(out), "--set", "memory.dram_bytes_per_cycle=0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "dram_bytes_per_cycle" in bad.stderr


def test_qat_json_and_its_program_simulates_with_the_same_numbers(tmp_path, monkeypatch):
    """``vitsim qat`` in a subprocess (its training log and progress on stderr, one JSON object on stdout); the
    program it writes is rebuilt by ``simulate`` from the trained model saved beside it, with the same numbers. With
    ``--pot`` every scale learnt is a power of two, so every requantization in the program is a shift."""
    import os

    env = {**os.environ, "VITSIM_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "qat.vitp"
    res = subprocess.run([sys.executable, "-m", "vitsim", "qat", "--wbits", "4", "--abits", "4", "--epochs", "1", "--pot",
                          "--train-images", "64", "--batch-size", "32", "--held-out", "200", "--limit", "200",
                          "--out", str(out), "--json"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert {"fp32_top1", "quant_top1", "int_top1", "agreement", "held_out_top1", "train_s", "history"} <= set(r)
    assert r["agreement"] >= 0.99 and r["n"] == 200 and len(r["history"]) == 2 and "epoch 1/1" in res.stderr
    assert (tmp_path / "qat.qat.safetensors").exists() and r["pot"]
    from hwsim.ir import load

    modes = {op.attrs.get("mode") for op in load(out).ops if op.kind == "Requant"}
    assert modes == {"shift"}
    s = run_cli("simulate", str(out), "--limit", "200", "--json")
    s = json.loads(s.stdout)
    assert s["top1"] == r["int_top1"] and s["agreement"] == r["agreement"] and "warning" not in s
    bad = run_cli("qat", "--wbits", "9", "--abits", "4", "--out", str(tmp_path / "bad.vitp"))
    assert bad.returncode == 2 and "wbits" in bad.stderr and not (tmp_path / "bad.vitp").exists()


@pytest.mark.parametrize("args,message", [
    (["--wbits", "1"], "wbits"),
    (["--abits", "33"], "abits"),
    (["--wbits", "0"], "wbits"),
    (["--mp", "missing.yaml"], "not found"),
])
def test_quantize_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "bad.vitp"
    res = run_cli("quantize", "--model", "deit_fmnist", "--calib", "8", "--limit", "8", "--out", str(out), *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_unknown_mp_layer_is_an_error(tmp_path):
    mp = tmp_path / "mp.yaml"
    mp.write_text("layer:\n  blocks.42.attn.qkv: {wbits: 4}\n")
    res = run_cli("quantize", "--mp", str(mp), "--calib", "8", "--out", str(tmp_path / "x.vitp"))
    assert res.returncode == 2 and "unknown layers" in res.stderr and not (tmp_path / "x.vitp").exists()


def test_simulate_rejects_a_damaged_file(tmp_path):
    bad = tmp_path / "bad.vitp"
    bad.write_bytes(b"\x00" * 64)
    res = run_cli("simulate", str(bad))
    assert res.returncode == 2 and "bad.vitp" in res.stderr


@pytest.mark.rtl
def test_verify_json_and_mismatch_exit(tmp_path, capsys):
    out = tmp_path / "w4a4.vitp"
    assert main(["quantize", "--wbits", "4", "--abits", "4", "--calib", "32", "--no-simulate", "--limit", "10",
                 "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    report = tmp_path / "verify" / "report.html"
    assert main(["verify", str(out), "--layer", "all", "--array", "8x8", "--directed", "--report", str(report),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["layers"]) >= 9 and r["all_bit_exact"] and r["cycles_equal"]
    for x in r["layers"]:
        assert {"bit_exact", "rtl_cycles", "model_cycles", "energy_pj", "wall_s"} <= set(x)
    directed = [x["layer"] for x in r["layers"] if x["layer"].startswith("directed.")]
    assert len(directed) == 6
    # the block's layers and the directed jobs: every bin; the shift bounds only from the directed jobs
    cov = r["coverage"]
    assert cov["percent"] == 100.0 and not cov["missed"] and cov["hit"] == cov["bins"]
    assert {"gemm.shift.min", "gemm.shift.max", "gemm.saturation.acc.high"} <= set(cov["directed_only"])
    assert "100.0 %" in report.read_text() and report.with_suffix(".coverage.png").stat().st_size > 1000
    res = run_cli("verify", str(out), "--layer", "qkv", "--block", "99")
    assert res.returncode == 2 and "out of range" in res.stderr


@pytest.mark.rtl
def test_verify_a_hybrid_bridge_block_with_clean_json_on_stdout(tmp_path):
    """mobilevit_fmnist under P2-ViT: `verify --layer convs` runs the MobileViT block's convolutions on the array,
    bit-exact at the model's cycles; in a separate process, so that the simulators' own logs (written by
    subprocesses and the embedded cocotb to file descriptor 1) would break the JSON if they reached stdout."""
    out = tmp_path / "mv.vitp"
    res = run_cli("quantize", "--model", "mobilevit_fmnist", "--method", "p2vit", "--wbits", "8", "--abits", "8",
                  "--calib", "32", "--no-simulate", "--limit", "10", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    res = run_cli("verify", str(out), "--layer", "convs", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["bridge"] == "stages.2.1" and r["all_bit_exact"] and r["cycles_equal"]
    assert [x["layer"] for x in r["layers"]] == ["stages.2.1.conv_kxk.conv", "stages.2.1.conv_1x1",
                                                 "stages.2.1.conv_proj.conv", "stages.2.1.conv_fusion.conv"]


def test_an_internal_error_is_not_reported_as_bad_input(monkeypatch):
    """A KeyError from a bug inside a pipeline keeps its traceback (exit 1), it is not turned into 'bad input'."""
    import vitsim.pipelines

    def broken(*args, **kwargs):
        return {}["a key our own code forgot"]

    monkeypatch.setattr(vitsim.pipelines, "simulate", broken)
    with pytest.raises(KeyError):
        main(["simulate", "any.vitp"])


def test_unknown_model_exits_2_with_one_line(tmp_path):
    res = run_cli("quantize", "--model", "no_such_vit", "--calib", "8", "--out", str(tmp_path / "x.vitp"))
    assert res.returncode == 2 and "unknown model 'no_such_vit'" in res.stderr and "Traceback" not in res.stderr


def test_an_architecture_without_integer_lowering_evaluates_but_does_not_quantize(tmp_path, capsys):
    """levit_128s: float eval works from timm's input size; quantize is one clear line naming the first op without an
    integer lowering (a BatchNorm1d after a Linear, which the capture does not fold), exit 2."""
    assert main(["eval", "--model", "levit_128s", "--data", "random", "--limit", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2
    res = run_cli("quantize", "--model", "levit_128s", "--data", "random", "--calib", "2", "--limit", "2",
                  "--out", str(tmp_path / "m.vitp"))
    assert res.returncode == 2 and "no integer lowering" in res.stderr and ".bn" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_the_cli_offers_every_registered_method():
    from quant.methods import METHODS
    from vitsim.cli import METHOD_CALIBRATION, METHOD_NAMES

    assert sorted(METHOD_NAMES) == sorted(METHODS)
    assert METHOD_CALIBRATION == {name: cls.calibration_images for name, cls in METHODS.items()}


@pytest.fixture(scope="module")
def w4a4_program(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "w4a4.vitp"
    res = run_cli("quantize", "--wbits", "4", "--abits", "4", "--calib", "32", "--no-simulate", "--limit", "10",
                  "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.rtl
@pytest.mark.parametrize("sim,layer", [("icarus", "matmul_qk"), ("verilator", "all")])
def test_verify_on_two_dask_workers_gives_the_serial_results(sim, layer, w4a4_program):
    """`verify --workers 2`: the GEMM jobs in two balanced simulations and the units beside them on two Dask workers;
    every layer's result (bit-exactness, first mismatch, RTL and model cycles, energy) as the serial run's, in the same
    order. Icarus runs the four attention heads' q.k^T (two groups of two; the whole block takes it ~2 min)."""
    runs = {}
    for workers in ("0", "2"):
        res = run_cli("verify", str(w4a4_program), "--layer", layer, "--sim", sim, "--workers", workers, "--json")
        assert res.returncode == 0, res.stderr[-3000:]
        runs[workers] = json.loads(res.stdout)
    assert "2 worker processes" in runs["2"]["engine"]
    timing = ("wall_s", "phases_s")
    layers = {w: [{k: v for k, v in x.items() if k not in timing} for x in r["layers"]] for w, r in runs.items()}
    assert layers["2"] == layers["0"] and len(layers["0"]) >= (13 if layer == "all" else 4)
    assert runs["2"]["all_bit_exact"] and runs["2"]["cycles_equal"]


def _user_engine(tmp_path: Path, name: str, bug: bool) -> list[Path]:
    """rtl/src's GEMM engine copied out of the repository under another top-module name, optionally with a seeded
    bug: column 5 of the first column tile written one higher than computed."""
    from rtl.runner import GEMM_SOURCES, SRC

    folder = tmp_path / name
    folder.mkdir()
    files = []
    for src in GEMM_SOURCES:
        text = (SRC / src).read_text().replace("module gemm_engine", f"module {name}")
        if bug and src == "gemm_engine.v":
            line = "out_mem[m_row * cfg_n + {16'd0, tn0} + c] <= y_col[c*OUT_W +: OUT_W];"
            assert line in text
            text = text.replace(line, "out_mem[m_row * cfg_n + {16'd0, tn0} + c] <= y_col[c*OUT_W +: OUT_W] + "
                                      "{{(OUT_W - 1){1'b0}}, tn0 == 16'd0 && c == 5};")
        files.append(folder / src)
        files[-1].write_text(text)
    return files


@pytest.mark.rtl
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_verify_runs_a_users_engine_and_catches_a_seeded_bug_at_its_index(sim, w4a4_program, tmp_path):
    """`verify --rtl FILES --top NAME` on a copy of the engine from outside the repository with a seeded bug: it fails
    at the first wrong element, (0, 5) of the first GEMM, with the RTL's value one above hwsim's. (A design outside
    rtl/src passing is the weight-stationary test below; the copy without the bug is the engine itself.)"""
    bad = _user_engine(tmp_path, "buggy_gemm", bug=True)
    res = run_cli("verify", str(w4a4_program), "--layer", "qkv", "--sim", sim, "--rtl", *map(str, bad), "--top",
                  "buggy_gemm", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["dut"].startswith("buggy_gemm (")
    first = json.loads(res.stdout)["layers"][0]["first_mismatch"]
    assert first["index"] == [0, 5] and first["rtl_out"] == first["hwsim_out"] + 1, first
    assert first["rtl_acc"] == first["hwsim_acc"]   # the accumulator was right: the bug is in the write-back
    assert first["tile"] == [0, 0] and len(first["a_row"]) == len(first["b_row"]) == 64   # what fed it: K = 64
    assert "first mismatch at output (0, 5), tile (0, 0)" in res.stderr, res.stderr
    res = run_cli("verify", str(w4a4_program), "--layer", "softmax", "--rtl", *map(str, bad), "--top", "buggy_gemm")
    assert res.returncode == 2 and "nonlinear unit" in res.stderr
    if sim == "icarus":   # --waves: the waveform file, and the window of the tile that wrote the wrong element
        res = run_cli("verify", str(w4a4_program), "--layer", "qkv", "--sim", sim, "--rtl", *map(str, bad), "--top",
                      "buggy_gemm", "--waves", "--json")
        layer = json.loads(res.stdout)["layers"][0]
        lo, hi = layer["first_mismatch"]["waves_window_ns"]
        assert Path(layer["waves"]).stat().st_size > 0 and 0 <= lo < hi and hi - lo >= 10 * layer["model_cycles"] / \
            layer["tiles"]


@pytest.mark.rtl
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_verify_passes_a_weight_stationary_engine_on_its_own_schedule(sim, w4a4_program):
    """tests/hdl/ws_gemm.v, a weight-stationary organisation written for the tests, behind the engine's port
    protocol: bit-exact on real layers; with --own-schedule its cycles are reported, not compared; without it, the
    schedule check fails it (its tiles take ceil(K / R) (R + 1) + R + 1 cycles, not the reference K + 2R + C + 1)."""
    ws = str(Path(__file__).resolve().parent.parent / "hdl" / "ws_gemm.v")
    res = run_cli("verify", str(w4a4_program), "--layer", "fc1", "--sim", sim, "--rtl", ws, "--top", "ws_gemm",
                  "--own-schedule", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["all_bit_exact"] and r["cycles_equal"] is None
    (fc1,) = r["layers"]
    k, rows = fc1["shape_mkn"][1], 8
    assert fc1["rtl_cycles"] == fc1["tiles"] * (-(-k // rows) * (rows + 1) + rows + 1) != fc1["model_cycles"]
    res = run_cli("verify", str(w4a4_program), "--layer", "fc1", "--sim", sim, "--rtl", ws, "--top", "ws_gemm", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["all_bit_exact"]

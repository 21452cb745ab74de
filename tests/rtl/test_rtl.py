"""RTL against hwsim on both simulators: PE/requantizer vectors, real GEMM layers with cycle counts equal to the
model, lint and synthesis. A missing simulator is an error here, never a skip (CI must run these for real)."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from hwsim.arch import load_hardware, with_array
from hwsim.cost import cost
from hwsim.executor import quantize_input, run
from rtl.coverage import merge, summary
from rtl.directed import directed_gemm_jobs
from rtl.layers import GEMM_KINDS, block_jobs
from rtl.runner import DEPENDENCIES, SIMULATORS, SRC, run_gemm_jobs, run_pe_vectors

pytestmark = pytest.mark.rtl


@pytest.fixture(scope="module")
def block_jobs_by_bits(p2vit_programs, fmnist_test):
    out = {}
    for bits, program in p2vit_programs.items():
        trace = run(program, quantize_input(program, fmnist_test[0][:1]), trace=True).trace
        out[bits] = block_jobs(program, trace, 0)
    return out


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("acc_w,out_w", [(32, 16), (24, 8)])
def test_pe_and_requantizer_vectors(sim, acc_w, out_w, tmp_path):
    res = run_pe_vectors(sim, n_random=20_000, seed=7, acc_w=acc_w, out_w=out_w, build_root=tmp_path)
    assert res["pe_vectors"] >= 85_000 and res["requant_vectors"] >= 100_000
    assert res["pe_mismatches"] == 0 and res["requant_mismatches"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
def test_pe_and_requantizer_vectors_full_count(sim, tmp_path):
    res = run_pe_vectors(sim, n_random=100_000, seed=11, build_root=tmp_path)
    # 100 000 random + every int4x2 nibble pair (65 536) + int4 in int8 mode (256) + every log2 and every log-sqrt(2)
    # code x int8 (2 x 4 096) + every 4-bit sign code x m 1..12 and every 8-bit one x m 1..8, times 6 int8 operands
    assert res["pe_vectors"] == 187_424 and res["pe_mismatches"] == 0 and res["requant_mismatches"] == 0


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("array", [(8, 8), (16, 16)])
@pytest.mark.parametrize("bits", [(8, 8), (4, 4)])
def test_block_gemms_bit_exact_with_model_cycles(sim, array, bits, block_jobs_by_bits, p2vit_programs):
    """Block 0's GEMMs, then rtl.directed's jobs (in the same simulation): bit-exact at the model's cycles; the
    functional coverage of the whole run (sampled by the testbench) hits every bin of rtl.coverage."""
    jobs = block_jobs_by_bits[bits]
    assert {j.name.split(".")[3] for j in jobs} == set(GEMM_KINDS)
    directed = directed_gemm_jobs()
    results = run_gemm_jobs(jobs + directed, sim, *array)
    assert len(results) == len(jobs) + len(directed)
    rtl_by_op: dict[str, int] = {}
    for i, (job, r) in enumerate(zip(jobs + directed, results)):
        assert r["bit_exact"], r
        assert r["cycles_equal_per_tile"] and r["rtl_cycles"] == r["model_cycles"], r
        if i >= len(jobs):
            continue
        op = re.sub(r"(\.window\d+)?\.head\d+$", "", job.name)
        rtl_by_op[op] = rtl_by_op.get(op, 0) + r["rtl_cycles"]
    covered = summary(merge(r["coverage"] for r in results))
    assert covered["percent"] == 100.0, covered["missed"]
    real = summary(merge(r["coverage"] for r in results[:len(jobs)]))
    # what the layers alone reach (P^2-ViT: packed int4 at W4A4 with log2 attention, a folded GELU zero point)
    assert real["percent"] < 100.0 and "gemm.zero_point.folded" not in real["missed"]
    assert ("gemm.mode.int4x2" not in real["missed"]) == (bits == (4, 4))
    # the whole-program cost model prices each of these ops (all heads of a MatMul) at exactly the RTL's cycles
    priced = {o.name: o.compute_cycles for o in cost(p2vit_programs[bits], with_array(load_hardware(), *array)).ops}
    assert rtl_by_op == {op: priced[op] for op in rtl_by_op}


def test_a_wrong_expected_value_is_caught(block_jobs_by_bits):
    job = block_jobs_by_bits[(8, 8)][0]
    job.out = job.out.copy()
    job.out[3, 5] += 1
    (r,) = run_gemm_jobs([job], "verilator", 8, 8)
    assert not r["bit_exact"] and r["mismatches"] == 1
    assert r["first_mismatch"]["index"] == [3, 5] and r["first_mismatch"]["rtl_out"] == job.out[3, 5] - 1


@pytest.mark.parametrize("top", sorted(DEPENDENCIES))
def test_verilator_lint_is_clean(top):
    verilator = shutil.which("verilator")
    assert verilator, "verilator not on PATH (make setup)"
    files = [SRC / f"{m}.v" for m in [top] + DEPENDENCIES[top]]
    res = subprocess.run([verilator, "--lint-only", "-Wall", "--top-module", top, *map(str, files)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("top,params", [("mac_pe", {}), ("shift_requant", {}), ("systolic_array", {"R": 4, "C": 4}),
                                        ("gemm_engine", {"R": 2, "C": 2, "ADDR_W": 4}),
                                        ("softmax_unit", {"ADDR_W": 6, "N_MAX": 16}),
                                        ("layernorm_unit", {"ADDR_W": 6, "C_MAX": 16}),
                                        ("gelu_unit", {"ADDR_W": 6})])
def test_yosys_synthesizes(top, params):
    from rtl.synth import synth_cells

    cells = synth_cells(top, params)
    assert cells > 0


def _unit_jobs():
    from rtl.layers import gelu_job, layernorm_job, softmax_job
    from rtl.runner import run_gelu_job, run_layernorm_job, run_softmax_job

    return {"softmax": ("blocks.0.attn.softmax", lambda p, t: softmax_job(p, t, 0), run_softmax_job),
            "layernorm": ("blocks.0.norm2", lambda p, t: layernorm_job(p, t, "blocks.0.norm2"), run_layernorm_job),
            "gelu": ("blocks.0.mlp.act", lambda p, t: gelu_job(p, t, "blocks.0.mlp.act"), run_gelu_job)}


@pytest.fixture(scope="module")
def traces(p2vit_programs, fmnist_test):
    return {bits: run(program, quantize_input(program, fmnist_test[0][:1]), trace=True).trace
            for bits, program in p2vit_programs.items()}


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("bits", [(8, 8), (4, 4)])
@pytest.mark.parametrize("unit", ["softmax", "layernorm", "gelu"])
def test_unit_on_real_rows_bit_exact_at_the_cost_models_cycles(sim, bits, unit, p2vit_programs, traces):
    op_name, make_job, run_job = _unit_jobs()[unit]
    program = p2vit_programs[bits]
    r = run_job(make_job(program, traces[bits]), sim)
    assert r["bit_exact"], r
    assert r["cycles_equal_per_row"] and r["rtl_cycles"] == r["model_cycles"], r
    one_unit = load_hardware(None, {f"units.{unit}": 1})
    assert r["rtl_cycles"] == next(o for o in cost(program, one_unit).ops if o.name == op_name).compute_cycles


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("sqrt2,eta", [(False, 0), (True, 0), (False, 41), (False, 4096)])
def test_softmax_unit_on_random_rows_covers_every_code(sim, sqrt2, eta):
    from hwsim.kernels.softmax import LOG2, LOG_SQRT2, softmax_int
    from rtl.layers import SoftmaxJob
    from rtl.runner import run_softmax_job

    rng = np.random.default_rng(5)
    x = rng.integers(-3000, 3000, (96, 61)).astype(np.int64)
    x[:8] = rng.integers(-20, 20, (8, 61))  # near-uniform rows: small codes
    x[8:16, 7] = 6000  # one dominant logit: p near 1, code 0
    x[16:24] = rng.integers(-400, 400, (8, 61))  # flatter rows: the log-sqrt(2) codes' middle range
    codes = np.empty_like(x)
    softmax_int(x, 8, 4, LOG_SQRT2 if sqrt2 else LOG2, codes, eta)
    if sqrt2:
        assert set(np.unique(codes)) == set(range(16))
    elif eta == 0:
        assert set(np.unique(codes)) >= set(range(0, 16, 3))
    else:  # SULQ: codes stop at round(-log2 eta): 7 for eta 0.01, 0 for eta 1
        assert set(np.unique(codes)) == (set(range(8)) if eta == 41 else {0})
    r = run_softmax_job(SoftmaxJob("random", x, 8, codes, sqrt2, eta), sim)
    assert r["bit_exact"] and r["cycles_equal_per_row"], r


@pytest.mark.parametrize("sim", SIMULATORS)
def test_repq_log_sqrt2_attention_runs_bit_exact_on_the_softmax_unit_and_the_array(sim, repq_w4a4, fmnist_test):
    """RepQ-ViT's block 0 on real data: log-sqrt(2) codes from the softmax unit, attn @ V in the PE's log-sqrt(2)
    mode on a 16x16 array; both bit-exact, cycles equal to the cost model. RepQ-ViT's scales are floats: the RTL
    (a shift requantizer) is checked up to attn @ V's accumulators."""
    from hwsim.cost.cycles import MODE_LOG_SQRT2
    from rtl.layers import softmax_job
    from rtl.runner import run_softmax_job

    program = repq_w4a4.export()
    trace = run(program, quantize_input(program, fmnist_test[0][:1]), trace=True).trace
    jobs = block_jobs(program, trace, 0, kinds=("matmul_av",), dyadic_accumulators=True)
    assert jobs and all(j.mode == MODE_LOG_SQRT2 for j in jobs)
    results = run_gemm_jobs(jobs, sim, 16, 16)
    assert all(r["bit_exact"] and r["cycles_equal_per_tile"] for r in results), results
    modes = {"array.pe_modes": ["int8", "int4x2", "log2", "log_sqrt2"]}
    priced = {o.name: o.compute_cycles for o in cost(program, with_array(load_hardware(None, modes), 16, 16)).ops}
    assert sum(r["rtl_cycles"] for r in results) == priced["blocks.0.attn.matmul_av"]
    # without the PE's log-sqrt(2) mode the decoded 16-bit operand takes two int8 passes
    fallback = {o.name: o for o in cost(program, with_array(load_hardware(), 16, 16)).ops}["blocks.0.attn.matmul_av"]
    assert fallback.mode == "int8x2" and fallback.compute_cycles > priced["blocks.0.attn.matmul_av"]
    job = softmax_job(program, trace, 0)
    assert job.sqrt2
    r = run_softmax_job(job, sim)
    assert r["bit_exact"] and r["cycles_equal_per_row"], r
    one_unit = load_hardware(None, {"units.softmax": 1})
    assert r["rtl_cycles"] == next(o for o in cost(program, one_unit).ops if o.name == job.name).compute_cycles


@pytest.mark.parametrize("sim", SIMULATORS)
def test_sulq_attention_runs_bit_exact_on_the_softmax_unit_and_the_array(sim, isvit_sulq_w4a4, fmnist_test):
    """I&S-ViT's SULQ on real data (block 0): codes of p + eta from the softmax unit; attn @ V in the PE's log2 mode
    with -eta * sum V as each column's bias; bit-exact, cycles equal to the cost model (accumulators: float scales)."""
    from rtl.layers import softmax_job
    from rtl.runner import run_softmax_job

    program = isvit_sulq_w4a4.export()
    trace = run(program, quantize_input(program, fmnist_test[0][:1]), trace=True).trace
    job = softmax_job(program, trace, 0)
    assert job.eta > 0
    r = run_softmax_job(job, sim)
    assert r["bit_exact"] and r["cycles_equal_per_row"], r
    jobs = block_jobs(program, trace, 0, kinds=("matmul_av",), dyadic_accumulators=True)
    assert all(j.bias.min() < 0 for j in jobs)  # the eta correction is there
    results = run_gemm_jobs(jobs, sim, 16, 16)
    assert all(r["bit_exact"] and r["cycles_equal_per_tile"] for r in results), results
    priced = {o.name: o.compute_cycles for o in cost(program, with_array(load_hardware(), 16, 16)).ops}
    assert sum(r["rtl_cycles"] for r in results) == priced["blocks.0.attn.matmul_av"]


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("bits,m", [(4, 3), (8, 1), (6, 10)])
def test_softmax_unit_twin_codes_on_random_rows_cover_both_regions(sim, bits, m):
    """PTQ4ViT's twin-uniform softmax codes: the divider and the two rounding steps bit-exact on rows that reach
    every fine code, the coarse region and its saturation; cycles 3n + 1 + 31 per row."""
    from hwsim.kernels.softmax import TWIN, softmax_int
    from rtl.layers import SoftmaxJob
    from rtl.runner import run_softmax_job

    rng = np.random.default_rng(9)
    x = rng.integers(-3000, 3000, (64, 53)).astype(np.int64)
    x[:8] = rng.integers(-20, 20, (8, 53))   # near-uniform rows: the fine region
    x[8:16, 5] = 6000                         # one dominant logit: the top coarse code
    x[16:32] = rng.integers(-900, 900, (16, 53))
    codes = np.empty_like(x)
    softmax_int(x, 8, bits, TWIN, codes, 0, m)
    half = 1 << (bits - 1)
    assert set(range(min(half, 8))) <= set(np.unique(codes)) and codes.max() == 2 * half - 1
    r = run_softmax_job(SoftmaxJob("random-twin", x, 8, codes, twin_m=m, bits=bits), sim)
    assert r["bit_exact"] and r["cycles_equal_per_row"], r


@pytest.mark.parametrize("sim", SIMULATORS)
def test_ptq4vit_twin_codes_run_bit_exact_on_the_softmax_unit_and_the_array(sim, ptq4vit_w4a4, fmnist_test):
    """PTQ4ViT's block 0 on real data: twin-uniform softmax codes from the softmax unit; attn @ V (flag codes) and fc2
    (post-GELU sign codes) on a 16x16 array with the edge decode; bit-exact, cycles equal to the cost model with the
    PE's twin mode (PTQ4ViT's scales are floats: checked up to the accumulators)."""
    from hwsim.cost.cycles import MODE_TWIN
    from rtl.layers import softmax_job
    from rtl.runner import run_softmax_job

    program = ptq4vit_w4a4.export()
    trace = run(program, quantize_input(program, fmnist_test[0][:1]), trace=True).trace
    job = softmax_job(program, trace, 0)
    assert job.twin_m > 0 and job.codes.max() >= 1 << (job.bits - 1)  # the coarse region is used
    r = run_softmax_job(job, sim)
    assert r["bit_exact"] and r["cycles_equal_per_row"], r
    one_unit = load_hardware(None, {"units.softmax": 1})
    assert r["rtl_cycles"] == next(o for o in cost(program, one_unit).ops if o.name == job.name).compute_cycles
    jobs = block_jobs(program, trace, 0, kinds=("matmul_av", "fc2"), dyadic_accumulators=True)
    assert all(j.mode == MODE_TWIN for j in jobs) and {j.twin_signed for j in jobs} == {False, True}
    fc2 = next(j for j in jobs if j.name.endswith("fc2"))
    assert fc2.a.min() < 0 < fc2.a.max()  # both regions of the sign code
    results = run_gemm_jobs(jobs, sim, 16, 16)
    assert all(r["bit_exact"] and r["cycles_equal_per_tile"] for r in results), results
    modes = {"array.pe_modes": ["int8", "int4x2", "log2", "twin"]}
    priced = {o.name: o for o in cost(program, with_array(load_hardware(None, modes), 16, 16)).ops}
    for name in ("blocks.0.attn.matmul_av", "blocks.0.mlp.fc2"):
        assert priced[name].mode == "twin"
        assert sum(r["rtl_cycles"] for r in results if r["name"].startswith(name)) == priced[name].compute_cycles


@pytest.mark.parametrize("sim", SIMULATORS)
def test_layernorm_unit_on_random_rows(sim):
    from hwsim.kernels.layernorm import layernorm_int
    from rtl.layers import LayerNormJob
    from rtl.runner import run_layernorm_job

    rng = np.random.default_rng(9)
    x = rng.integers(-2**15, 2**15, (40, 48)).astype(np.int64)
    x[0] = 77  # a constant row: variance 0
    x[1] = rng.integers(-3, 3, 48)
    gamma, beta = rng.integers(-2**15, 2**15, 48), rng.integers(-2**40, 2**40, 48)
    shift = rng.integers(20, 48, 48)
    out = np.empty_like(x)
    layernorm_int(x, gamma, beta, shift, -128, 127, out)
    r = run_layernorm_job(LayerNormJob("random", x, gamma, beta, shift, -128, 127, out), sim)
    assert r["bit_exact"] and r["cycles_equal_per_row"], r


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("frac,sig", [(12, 8), (6, 15), (14, 1)])
def test_gelu_unit_on_every_16_bit_input(sim, frac, sig):
    from hwsim.kernels.gelu import gelu_int
    from rtl.layers import GeluJob
    from rtl.runner import run_gelu_job

    x = np.arange(-2**15, 2**15, dtype=np.int64).reshape(256, 256)
    out = np.empty_like(x)
    gelu_int(x, frac, sig, out)
    r = run_gelu_job(GeluJob("every input", x, frac, sig, out), sim)
    assert r["bit_exact"] and r["cycles_equal_per_row"], r


@pytest.mark.parametrize("sim", SIMULATORS)
def test_gelu_unit_runs_silu_on_every_16_bit_input(sim):
    """The GELU unit's SiLU mode (z = x, no 1.702 shift-adds) against hwsim's SiLU kernel, every 16-bit input."""
    from hwsim.kernels.activations import silu_int
    from rtl.layers import GeluJob
    from rtl.runner import run_gelu_job

    x = np.arange(-2**15, 2**15, dtype=np.int64).reshape(256, 256)
    out = np.empty_like(x)
    silu_int(x, 12, 8, -2**31, 2**31 - 1, out)
    r = run_gelu_job(GeluJob("every input", x, 12, 8, out, silu=True), sim)
    assert r["bit_exact"] and r["cycles_equal_per_row"], r


def test_area_table_matches_synthesis_of_every_pe_variant():
    """hwsim/configs/area.yaml is what `make area` writes: a PE edited without regenerating it fails here."""
    from hwsim.cost.area import area_table
    from rtl.synth import PE_VARIANTS, area_entry

    table = area_table()
    for modes, params in PE_VARIANTS.items():
        assert table["pe"][modes] == area_entry("mac_pe", params), modes
    cells = [table["pe"][m]["cells"] for m in ("int8", "int8+log2", "int8+int4x2", "int8+int4x2+log2",
                                                 "int8+int4x2+log2+log_sqrt2")]
    assert cells == sorted(cells) and len(set(cells)) == 5  # every operand mode costs area
    # the twin codes' 4-bit product shift costs area on the plain int8 PE; where a log mode's barrel shifter is
    # already there, synthesis absorbs it (within 1 %)
    assert table["pe"]["int8+twin"]["cells"] > table["pe"]["int8"]["cells"]
    for modes in ("int8+int4x2+log2", "int8+int4x2+log2+log_sqrt2"):
        assert abs(table["pe"][modes + "+twin"]["cells"] / table["pe"][modes]["cells"] - 1) < 0.01, modes
    units = table["units"]
    assert units["softmax+sqrt2"]["cells"] > units["softmax"]["cells"]
    assert units["softmax+twin"]["cells"] > units["softmax"]["cells"]  # the divider
    assert units["softmax+sqrt2+twin"]["cells"] > units["softmax+sqrt2"]["cells"]


@pytest.fixture(scope="module")
def mobilevit_p2vit(fmnist_test):
    """mobilevit_fmnist (random weights: bit-exactness needs none trained) under P2-ViT at W8A8 and hwsim's trace of
    one test image."""
    import torch

    from models.data import calibration_data
    from models.registry import create_model
    from quant.build import default_map, quantize_model
    from quant.methods import get_method

    torch.manual_seed(0)
    net = create_model("mobilevit_fmnist", pretrained=False)
    q = quantize_model(net, calibration_data("fmnist", net, 8, seed=0), get_method("p2vit"), default_map(8, 8),
                       name="mobilevit_fmnist")
    program = q.export()
    return program, run(program, quantize_input(program, fmnist_test[0][:1]), trace=True).trace


@pytest.mark.parametrize("sim", SIMULATORS)
def test_hybrid_convolutions_run_on_the_gemm_engine_bit_exact_at_model_cycles(sim, mobilevit_p2vit):
    """A MobileViT block's convolutions (3x3 and 1x1, the fusion conv over the concatenation, input zero points padding
    the border) and a depthwise convolution of the inverted-residual block before it (one one-column GEMM per
    channel) run on the array from im2col rows: bit-exact against hwsim's trace, cycles equal to the cost model's."""
    from rtl.layers import bridge_prefix, conv_jobs

    program, trace = mobilevit_p2vit
    bridge = bridge_prefix(program, 0)
    assert bridge == "stages.2.1"
    jobs = conv_jobs(program, trace, bridge)
    depthwise = [j for j in conv_jobs(program, trace, "stages.2.0") if ".group" in j.name][:6]
    assert len(jobs) == 4 and len(depthwise) == 6 and all(j.shape[2] == 1 for j in depthwise)
    assert any(program.spec(op.inputs[0]).zero_point for op in program.ops
               if op.kind == "Conv2d" and op.name.startswith(bridge + "."))
    results = run_gemm_jobs(jobs + depthwise, sim, 8, 8)
    assert all(r["bit_exact"] for r in results), [r["first_mismatch"] for r in results if not r["bit_exact"]]
    assert all(r["rtl_cycles"] == r["model_cycles"] for r in results)

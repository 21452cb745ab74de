"""The GEMM coverage model (rtl.coverage) and the directed jobs (rtl.directed), without a simulator.

- Bins land where the engine puts the data: even k in an int4 PE's low lane, odd k in its high lane; PTF per lane.
- Saturation bins come from the clamp, not from the value: an output equal to qmax that hwsim's requantization
  reached without clamping is no saturation, one step more is; the accumulator's bins need its exact bounds.
- A bin's count is the number of jobs hitting it (merge), summary lists every defined bin, hits go to
  cocotb-coverage's database.
- The directed jobs alone hit every bin, and their expected outputs are hwsim's executor's on an equivalent Linear.
"""
from __future__ import annotations

import numpy as np

from hwsim.cost.cycles import MODE_INT4X2, MODE_INT8, MODE_LOG2
from rtl.coverage import BINS, database_counts, gemm_job_bins, merge, sample_gemm_job, summary
from rtl.directed import directed_gemm_jobs, hwsim_outputs


def _job(mode: int, a, b, acc, shift=(0,), ptf=None, qmin=-8, qmax=7, bits=4, z=0):
    a, b = np.asarray(a), np.asarray(b)
    meta = {"mode": mode, "qmin": qmin, "qmax": qmax, "a_bits": bits, "b_bits": bits, "a_zero_point": z}
    data = {"a": a, "b": b, "acc": np.asarray(acc), "shift": np.asarray(shift),
            "ptf": np.zeros(a.shape[1], np.int64) if ptf is None else np.asarray(ptf), "bias": np.zeros(len(b))}
    return meta, data


def test_int4_lanes_follow_the_engines_packing():
    meta, data = _job(MODE_INT4X2, [[0, -8, 7]], [[7, 0, 0]], [[0]], ptf=[2, 0, 0])
    lanes = gemm_job_bins(meta, data)["gemm.int4_lanes"]
    # a -8 at k=1 is in the high lane, a 7 at k=2 (even) in the low lane; K=3 is odd; PTF only at k=0 (low lane)
    assert lanes == {"a.hi.min", "a.lo.max", "b.lo.max", "k_odd", "ptf.lo"}
    meta, data = _job(MODE_INT4X2, [[0, -8]], [[0, 0]], [[0]])
    assert gemm_job_bins(meta, data)["gemm.int4_lanes"] == {"a.hi.min"}
    # int8 mode: the extremes are its declared width's
    meta, data = _job(MODE_INT8, [[-8, 7]], [[-128, 127]], [[0]], bits=8)
    bins = gemm_job_bins(meta, data)
    assert bins["gemm.operand.b"] == {"int8.min", "int8.max"} and "gemm.operand.a" not in bins
    assert "gemm.int4_lanes" not in bins


def test_saturation_bins_come_from_the_clamp():
    # shift 2, round half up: 29 -> 7 = qmax exactly (no clamp); 30 -> 8 (clamped to 7); -34 -> -8 exactly; -35 -> -9
    for acc, want in (([[29, -34]], set()), ([[30, -34]], {"out.high"}), ([[29, -35]], {"out.low"})):
        meta, data = _job(MODE_INT8, [[1]], [[1], [1]], acc, shift=[2, 2])
        assert gemm_job_bins(meta, data).get("gemm.saturation", set()) == want, acc
    meta, data = _job(MODE_INT8, [[1]], [[1], [1]], [[2 ** 31 - 1, -2 ** 31]], shift=[47, -16])
    bins = gemm_job_bins(meta, data)
    assert bins["gemm.saturation"] == {"acc.high", "acc.low", "out.low"}   # <<16 of -2^31 clamps; >>47 rounds to 0
    assert bins["gemm.shift"] == {"min", "max"}


def test_log_codes_zero_points_and_the_summary():
    meta, data = _job(MODE_LOG2, [[0, 15, 3]], [[1, 1, 1]], [[0]], z=-3)
    bins = gemm_job_bins(meta, data)
    assert bins["gemm.log2_codes"] == {"0", "3", "15"} and bins["gemm.zero_point"] == {"folded"}
    assert bins["gemm.mode"] == {"log2"} and "gemm.ptf" not in bins
    before = database_counts().get("gemm.mode", {}).get("log2", 0)
    one = sample_gemm_job(meta, data)
    assert database_counts()["gemm.mode"]["log2"] == before + 1   # cocotb-coverage's database holds the hits
    total = merge([one, one, None])
    s = summary(total)
    assert s["points"]["gemm.log2_codes"]["hits"]["3"] == 2 and s["points"]["gemm.log2_codes"]["hit"] == 3
    assert s["bins"] == sum(len(v) for v in BINS.values()) and "gemm.mode.int8" in s["missed"]
    assert s["hit"] == s["bins"] - len(s["missed"]) and 0 < s["percent"] < 100


def _bins_of(job) -> dict[str, dict[str, int]]:
    meta = {"mode": job.mode, "qmin": job.qmin, "qmax": job.qmax, "a_bits": job.a_bits, "b_bits": job.b_bits,
            "a_zero_point": job.a_zero_point}
    data = {"a": job.a, "b": job.b, "ptf": job.ptf, "shift": job.shift, "bias": job.bias, "acc": job.acc, "out": job.out}
    return {k: {label: 1 for label in v} for k, v in gemm_job_bins(meta, data).items()}


def test_directed_jobs_alone_hit_every_bin():
    jobs = directed_gemm_jobs()
    s = summary(merge(_bins_of(j) for j in jobs))
    assert s["percent"] == 100.0, s["missed"]
    assert all(j.name.startswith("directed.") for j in jobs)
    again = directed_gemm_jobs()
    assert all(np.array_equal(x.out, y.out) and np.array_equal(x.a, y.a) for x, y in zip(jobs, again))


def test_directed_expected_values_are_hwsim_executors():
    """The int8 job's expected values against hwsim's Linear and Requant ops on a one-layer program with the same codes
    (PTF input shifts, bias, per-channel shifts): the composition of kernels in rtl.directed is the program's."""
    from hwsim.ir import Op, Program, TensorSpec
    from hwsim.ops import OPS

    job = next(j for j in directed_gemm_jobs() if j.mode == MODE_INT8 and not j.a_zero_point)
    (m, k), n = job.a.shape, job.b.shape[0]
    tensors = {"x": TensorSpec((m, k), 8, True, exp=0), "acc": TensorSpec((m, n), 32, True, exp=0),
               "y": TensorSpec((m, n), 8, True, exp=0),
               "w": TensorSpec((n, k), 8, True, exp=0, constant=True), "b": TensorSpec((n,), 32, True, constant=True),
               "ptf": TensorSpec((k,), 8, True, constant=True), "sh": TensorSpec((n,), 8, True, constant=True)}
    ops = [Op("Linear", "fc", ("x",), ("acc",), {"weight": "w", "bias": "b", "input_shift": "ptf"}, {"acc_bits": 32}),
           Op("Requant", "rq", ("acc",), ("y",), {"shift": "sh"}, {"mode": "shift"})]
    consts = {"w": job.b.astype(np.int8), "b": job.bias.astype(np.int32), "ptf": job.ptf.astype(np.int8),
              "sh": job.shift.astype(np.int8)}
    program = Program("directed", ["x"], ["y"], tensors, ops, consts)
    (acc,), _ = OPS["Linear"].run(ops[0], program, [job.a[None].astype(np.int32)])
    (out,), _ = OPS["Requant"].run(ops[1], program, [acc])
    assert np.array_equal(acc[0], job.acc) and np.array_equal(out[0], job.out)
    acc2, out2 = hwsim_outputs(job.a, job.b, job.bias, job.shift, job.ptf, MODE_INT8, job.qmin, job.qmax, 8)
    assert np.array_equal(acc2, job.acc) and np.array_equal(out2, job.out)

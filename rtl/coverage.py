"""Functional coverage of the GEMM engine's stimulus and results, on cocotb-coverage's ``CoverPoint`` database.

A GEMM job (rtl.layers.GemmJob: the operands, bias, shifts and PTF shifts written into the engine's buffers, and the
accumulators and outputs that came back) is reduced with numpy to the set of bins it hits; each bin hit is sampled
once per job, so a bin's count is the number of jobs that hit it (sampling every element would cost seconds per job
in Python). The bins (``BINS``):

- ``gemm.mode``: each array mode (docs/rtl_protocol.md): int8, two packed int4 (int4x2), log2 and log-sqrt(2) codes,
  twin-uniform codes decoded at the array edge.
- ``gemm.operand.a`` / ``gemm.operand.b``: the operand reaches the smallest and the largest code of its declared
  width (e.g. -128 and 127 at 8 bits, -8 and 7 at 4), in int8 mode and in int4x2 mode.
- ``gemm.int4_lanes``: in int4x2 mode (even k in a PE's low nibble, odd k in its high one) each lane of A and of B
  reaches both extremes; a PTF shift in each lane; an odd K (the last PE's high lane left empty).
- ``gemm.ptf``: each PTF input shift 0..3 (FQ-ViT's power-of-two factors).
- ``gemm.zero_point``: an input without a zero point, and one whose zero point the bias carries (-z sum_k W).
- ``gemm.shift``: the requantizer's shift at its bounds (rtl.layers.SHIFT_RANGE: -16 and 47), negative (a left
  shift), zero and positive.
- ``gemm.saturation``: the output clamped at qmax from above and at qmin from below (hwsim's requantization of the
  accumulator without the clamp decides), and the accumulator saturated at either end of ACC_W by the bias add.
- ``gemm.log2_codes`` / ``gemm.log_sqrt2_codes``: every 4-bit log code of the A operand (0: 1, 15: 0).

Real layers leave some bins empty (shift bounds, accumulator saturation, modes a method does not use): rtl.directed
holds the directed jobs that fill them, and the block-0 regression with them hits every bin (tests/rtl).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from cocotb_coverage.coverage import CoverPoint, coverage_db

from hwsim.cost.cycles import MODE_INT4X2, MODE_INT8, MODE_LOG2, MODE_LOG_SQRT2, MODE_TWIN
from hwsim.kernels.requant import requant_shift
from rtl.layers import SHIFT_RANGE

ACC_W = 32
LOG_CODES = [str(c) for c in range(16)]
MODE_NAMES = {MODE_INT8: "int8", MODE_INT4X2: "int4x2", MODE_LOG2: "log2", MODE_LOG_SQRT2: "log_sqrt2",
              MODE_TWIN: "twin"}
_OPERAND = ["int8.min", "int8.max", "int4x2.min", "int4x2.max"]
BINS: dict[str, list[str]] = {
    "gemm.mode": list(MODE_NAMES.values()),
    "gemm.operand.a": _OPERAND,
    "gemm.operand.b": _OPERAND,
    "gemm.int4_lanes": [f"{x}.{lane}.{end}" for x in "ab" for lane in ("lo", "hi") for end in ("min", "max")]
    + ["ptf.lo", "ptf.hi", "k_odd"],
    "gemm.ptf": ["0", "1", "2", "3"],
    "gemm.zero_point": ["none", "folded"],
    "gemm.shift": ["min", "negative", "zero", "positive", "max"],
    "gemm.saturation": ["out.high", "out.low", "acc.high", "acc.low"],
    "gemm.log2_codes": LOG_CODES,
    "gemm.log_sqrt2_codes": LOG_CODES,
}


def _sampler(name: str, labels: list[str]):
    @CoverPoint(name, vname="label", bins=list(labels))
    def sample(label: str) -> None:
        """One hit of bin ``label`` (cocotb-coverage matches it against the point's bins)."""
    return sample


_SAMPLERS = {name: _sampler(name, labels) for name, labels in BINS.items()}


def _extremes(x: np.ndarray, bits: int) -> list[str]:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return [end for end, v in (("min", lo), ("max", hi)) if x.size and bool((x == v).any())]


def _shift_bin(s: int) -> str:
    if s == SHIFT_RANGE[0]:
        return "min"
    if s == SHIFT_RANGE[1]:
        return "max"
    return "negative" if s < 0 else "zero" if s == 0 else "positive"


def gemm_job_bins(job: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, set[str]]:
    """The bins one GEMM job hits. ``job``: its manifest entry (mode, qmin, qmax, a_bits, b_bits, a_zero_point);
    ``data``: a, b, bias, shift, ptf as written to the engine, acc and out as it returned them (equal to hwsim's
    when the job passed)."""
    mode = int(job["mode"])
    a, b, ptf = (np.asarray(data[k], np.int64) for k in ("a", "b", "ptf"))
    acc, shift = np.asarray(data["acc"], np.int64), np.asarray(data["shift"], np.int64)
    hits: dict[str, set[str]] = {name: set() for name in BINS}
    hits["gemm.mode"].add(MODE_NAMES[mode])
    if mode in (MODE_INT8, MODE_INT4X2):
        family = MODE_NAMES[mode]
        a_bits, b_bits = int(job["a_bits"]), int(job["b_bits"])
        hits["gemm.operand.a"].update(f"{family}.{e}" for e in _extremes(a, a_bits))
        hits["gemm.operand.b"].update(f"{family}.{e}" for e in _extremes(b, b_bits))
        hits["gemm.ptf"].update(str(int(v)) for v in np.unique(ptf))
        if mode == MODE_INT4X2:
            for x, name, bits in ((a, "a", a_bits), (b, "b", b_bits)):
                for lane, cols in (("lo", x[:, 0::2]), ("hi", x[:, 1::2])):
                    hits["gemm.int4_lanes"].update(f"{name}.{lane}.{e}" for e in _extremes(cols, bits))
            hits["gemm.int4_lanes"].update(f"ptf.{lane}" for lane, p in (("lo", ptf[0::2]), ("hi", ptf[1::2]))
                                           if bool(p.any()))
            if a.shape[1] % 2:
                hits["gemm.int4_lanes"].add("k_odd")
    elif mode in (MODE_LOG2, MODE_LOG_SQRT2):
        hits[f"gemm.{MODE_NAMES[mode]}_codes"].update(str(int(c)) for c in np.unique(a & 0xF))
    hits["gemm.zero_point"].add("folded" if job.get("a_zero_point", 0) else "none")
    hits["gemm.shift"].update(_shift_bin(int(s)) for s in np.unique(shift))
    # the output before its clamp: hwsim's requantization with the clamp opened to the int64 range
    wide = np.empty(acc.shape, np.int64)
    bound = np.iinfo(np.int64)
    requant_shift(acc.reshape(-1, acc.shape[-1]), shift, bound.min, bound.max, wide.reshape(-1, acc.shape[-1]))
    sat = hits["gemm.saturation"]
    if bool((wide > int(job["qmax"])).any()):
        sat.add("out.high")
    if bool((wide < int(job["qmin"])).any()):
        sat.add("out.low")
    if bool((acc == (1 << (ACC_W - 1)) - 1).any()):
        sat.add("acc.high")
    if bool((acc == -(1 << (ACC_W - 1))).any()):
        sat.add("acc.low")
    return {k: v for k, v in hits.items() if v}


def sample_gemm_job(job: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Sample one job's bins into cocotb-coverage's database; returns them as {point: {bin: 1}}."""
    hits = gemm_job_bins(job, data)
    for name, labels in hits.items():
        for label in sorted(labels):
            _SAMPLERS[name](label)
    return {name: {label: 1 for label in sorted(labels)} for name, labels in hits.items()}


def merge(counts: Iterable[dict[str, dict[str, int]] | None]) -> dict[str, dict[str, int]]:
    """Sum per-job (or per-run) bin counts."""
    total: dict[str, dict[str, int]] = {}
    for c in counts:
        for name, bins in (c or {}).items():
            slot = total.setdefault(name, {})
            for label, n in bins.items():
                slot[label] = slot.get(label, 0) + n
    return total


def summary(counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Every defined bin with its hit count, per point and overall: {"percent", "bins", "hit", "missed", "points"}."""
    points = {}
    for name, labels in BINS.items():
        got = counts.get(name, {})
        hits = {label: int(got.get(label, 0)) for label in labels}
        points[name] = {"bins": len(labels), "hit": sum(1 for n in hits.values() if n), "hits": hits}
    n_bins = sum(p["bins"] for p in points.values())
    n_hit = sum(p["hit"] for p in points.values())
    missed = [f"{name}.{label}" for name, p in points.items() for label, n in p["hits"].items() if not n]
    return {"percent": round(100.0 * n_hit / n_bins, 2), "bins": n_bins, "hit": n_hit, "missed": missed,
            "points": points}


def database_counts() -> dict[str, dict[str, int]]:
    """What cocotb-coverage's database holds for the points of ``BINS`` (this process's samples)."""
    return {name: {str(k): int(v) for k, v in coverage_db[name].detailed_coverage.items() if v}
            for name in BINS if name in coverage_db}

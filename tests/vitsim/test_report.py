"""The exploration report in a real browser: headless Chromium loads report.html and decodes every plot."""
from __future__ import annotations

import re
import shutil
import subprocess

from quant.search.space import SearchSpace
from vitsim.explore import pareto_front
from vitsim.report import write_report


def synthetic_points() -> tuple[list[dict], SearchSpace]:
    space = SearchSpace.from_layers({"patch_embed.proj": "conv", "blocks.0.attn.qkv": "linear",
                                     "blocks.0.mlp.fc1": "linear", "head": "linear"})
    points = []
    for hw, scale in (("16x16", 1.0), ("edge-8x8", 2.5)):
        for i, (w, a, top1) in enumerate(((8, 8, 0.91), (4, 4, 0.89), (4, 8, 0.90), (3, 4, 0.80))):
            bits = space.full({name: {"wbits": w, "abits": a} for name in space.layers})
            parts = {"multiply": 1e6 * w, "accumulate": 5e5, "requant": 1e4, "nonlinear": 2e5, "vector": 1e3,
                     "sram": 3e6, "dram": 1e7 * a / 8}
            points.append({"config": f"W{w}A{a}", "kind": "uniform" if i else "mixed", "hw": hw, "top1": top1,
                           "energy_uj": scale * sum(parts.values()) / 1e6, "latency_ms": scale * (0.5 + 0.05 * w),
                           "area_mm2": 0.4, "energy_pj": parts, "bits": bits})
    front = pareto_front(points, "energy_uj")
    for p in points:
        p["pareto_energy"] = any(p is q for q in front)
        p["pareto_latency"] = p["pareto_energy"]
    return points, space


def test_pareto_front_keeps_only_undominated_points_per_hardware():
    points, _ = synthetic_points()
    front = {(p["hw"], p["config"]) for p in pareto_front(points, "energy_uj")}
    # W3A4 is cheapest but worst; W4A4 is cheaper than W4A8 and W8A8; W8A8 is the most accurate
    assert ("16x16", "W3A4") in front and ("16x16", "W8A8") in front and ("16x16", "W4A4") in front
    assert ("16x16", "W4A8") in front  # 0.90 at less energy than W8A8's 0.91
    worse = dict(points[2], top1=0.85, energy_uj=points[0]["energy_uj"] + 1)
    assert not any(p is worse for p in pareto_front(points + [worse], "energy_uj"))


def test_report_renders_every_plot_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium not on PATH (make setup installs the Debian package)"
    points, space = synthetic_points()
    report = write_report(points, [], space, tmp_path, {"model": "m", "method": "p2vit", "test_images": 10,
                                                        "calibration_images": 4, "held_out_images": 4})
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    plots = re.search(r'data-plots="(\d+)"', res.stdout)
    loaded = re.search(r'data-plots-loaded="(\d+)"', res.stdout)
    assert plots and loaded, res.stdout[:500]
    assert int(plots.group(1)) == 4 and int(loaded.group(1)) == 4  # two Pareto plots, the heatmap, the energy bars


def test_verify_report_shows_missed_bins_and_decodes_its_plot_in_headless_chromium(tmp_path):
    from rtl.coverage import summary
    from vitsim.verify_report import write_verify_report

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium not on PATH (make setup installs the Debian package)"
    cov = summary({"gemm.mode": {"int8": 3}, "gemm.shift": {"zero": 1, "max": 1}})
    cov["directed_only"] = ["gemm.shift.max"]
    layer = {"layer": "blocks.0.attn.qkv", "bit_exact": False, "rtl_cycles": 10, "model_cycles": 10, "energy_pj": 1.0,
             "wall_s": 0.1, "first_mismatch": {"index": [0, 5]}}
    result = {"program": "p.vitp", "block": 0, "array": "8x8", "sim": "verilator", "dut": "gemm_engine (rtl/src)",
              "all_bit_exact": False, "cycles_equal": True, "total_cycles": 10, "simulated_cycles_per_s": 100,
              "wall_s": 1.0, "engine": "in this process", "layers": [layer], "coverage": cov}
    report = write_verify_report(result, tmp_path / "v" / "report.html")
    text = report.read_text()
    assert f"{cov['hit']} of {cov['bins']} bins" in text and "MISMATCH" in text and "[0, 5]" in text
    assert "class='bin miss'>int4x2&nbsp;0" in text and "class='bin dir'>max&nbsp;1" in text
    assert "class='bin hit'>int8&nbsp;3" in text
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'data-plots="1"' in res.stdout and 'data-plots-loaded="1"' in res.stdout

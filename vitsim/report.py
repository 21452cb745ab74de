"""The exploration report: Pareto plots (top-1 vs energy, top-1 vs latency), a per-layer bit-width heatmap of the
mixed-precision results, energy-breakdown bars, and one self-contained ``report.html`` that shows them (images inlined,
so the file can be mailed or archived alone). matplotlib, Agg backend.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402
import numpy as np  # noqa: E402

from hwsim.cost.pricing import ENERGY_PARTS  # noqa: E402

MARKERS = {"uniform": "o", "mixed": "*"}


def _pareto_plot(points: list[dict[str, Any]], cost_key: str, label: str, flag: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    hws = sorted({p["hw"] for p in points})
    colors = dict(zip(hws, plt.cm.tab10.colors))
    for hw in hws:
        for kind, marker in MARKERS.items():
            sel = [p for p in points if p["hw"] == hw and p["kind"] == kind]
            if sel:
                ax.scatter([p[cost_key] for p in sel], [100 * p["top1"] for p in sel], marker=marker,
                           s=90 if kind == "mixed" else 30, color=colors[hw], label=f"{hw} {kind}", alpha=0.85)
        front = sorted((p for p in points if p["hw"] == hw and p[flag]), key=lambda p: p[cost_key])
        if front:
            ax.step([p[cost_key] for p in front], [100 * p["top1"] for p in front], where="post", color=colors[hw], lw=1)
    for p in points:
        if p[flag]:
            ax.annotate(p["config"], (p[cost_key], 100 * p["top1"]), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("integer top-1 (%)")
    ax.set_title(f"accuracy vs {label} (Pareto front per hardware)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _heatmap(points: list[dict[str, Any]], layers: list[str], path: Path) -> bool:
    rows = {}
    for p in points:
        if p["kind"] == "mixed" or p["config"] in ("W8A8", "W4A4"):
            rows.setdefault(p["config"], p["bits"])
    if not rows:
        return False
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.22 * len(layers)), 1.2 + 0.5 * len(rows) * 2), sharex=True)
    for ax, kind in zip(axes, ("wbits", "abits")):
        grid = np.array([[rows[r].get(l, {}).get(kind, 8) for l in layers] for r in rows], dtype=float)
        im = ax.imshow(grid, cmap="viridis", vmin=2, vmax=8, aspect="auto")
        ax.set_yticks(range(len(rows)), list(rows), fontsize=7)
        ax.set_title(f"{kind} per layer", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
    axes[-1].set_xticks(range(len(layers)), layers, rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _energy_bars(points: list[dict[str, Any]], path: Path) -> None:
    hw = points[0]["hw"]
    sel = [p for p in points if p["hw"] == hw and (p["kind"] == "mixed" or p["pareto_energy"])]
    sel = sorted(sel, key=lambda p: p["energy_uj"])[:16] or [p for p in points if p["hw"] == hw][:16]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(sel)), 4))
    bottom = np.zeros(len(sel))
    for part in ENERGY_PARTS:
        values = np.array([p["energy_pj"][part] / 1e6 for p in sel])
        ax.bar(range(len(sel)), values, bottom=bottom, label=part)
        bottom += values
    ax.set_xticks(range(len(sel)), [p["config"] for p in sel], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("energy per inference (uJ)")
    ax.set_title(f"energy breakdown on {hw}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fronts_plot(nsga: dict[str, Any], path: Path) -> None:
    """Held-out top-1 vs energy per hardware: every NSGA-II trial, its front, and the greedy search's front."""
    per_hw = nsga["per_hw"]
    fig, axes = plt.subplots(1, len(per_hw), figsize=(5.5 * len(per_hw), 4.2), squeeze=False)
    for ax, entry in zip(axes[0], per_hw):
        trials = [t for t in nsga["trial_points"] if t["hw"] == entry["hw"]]
        ax.scatter([t["energy_uj"] for t in trials], [100 * t["held_out_top1"] for t in trials], s=8, color="0.7",
                   label=f"NSGA-II trials on {entry['hw']}")
        f = entry["front"]
        ax.step([q["energy_uj"] for q in f], [100 * q["held_out_top1"] for q in f], where="post", color="C0",
                marker="o", ms=3, label=f"NSGA-II front ({nsga['trials']} evaluations)")
        if "greedy_front" in entry:
            walked = entry["greedy_path"]
            ax.scatter([q["energy_uj"] for q in walked], [100 * q["held_out_top1"] for q in walked], s=30, marker="x",
                       color="C3", alpha=0.6, label="Greedy MP trajectory (evaluated)")
            g = entry["greedy_front"]
            ax.step([q["energy_uj"] for q in g], [100 * q["held_out_top1"] for q in g], where="post", color="C3",
                    marker="*", ms=7, label=f"Greedy MP front ({entry['greedy_evaluations']} evaluations)")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())   # 30, 40, 50 rather than 4 x 10^1
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel(f"energy per inference on {entry['hw']} (uJ)")
        ax.set_ylabel("held-out integer top-1 (%)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Counts the plots the browser decoded into <body data-plots-loaded>: the report checks in tests/vitsim/test_report.py
# read it from headless Chromium.
PLOTS_LOADED_SCRIPT = """<script>
window.addEventListener("load", () => {
  document.body.dataset.plotsLoaded = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def write_report(points: list[dict[str, Any]], searches: list[dict[str, Any]], space, out: Path,
                 info: dict[str, Any], failures: list[dict[str, Any]] | None = None,
                 nsga: dict[str, Any] | None = None) -> Path:
    plots = [(out / "pareto_energy.png", "top-1 vs energy"), (out / "pareto_latency.png", "top-1 vs latency")]
    _pareto_plot(points, "energy_uj", "energy per inference (uJ)", "pareto_energy", plots[0][0])
    _pareto_plot(points, "latency_ms", "latency (ms)", "pareto_latency", plots[1][0])
    layers = list(space.fixed[:1]) + list(space.layers) + list(space.fixed[1:])
    if _heatmap(points, layers, out / "bits_heatmap.png"):
        plots.append((out / "bits_heatmap.png", "bits per layer"))
    if points:
        _energy_bars(points, out / "energy_breakdown.png")
        plots.append((out / "energy_breakdown.png", "energy breakdown"))
    rows = "".join(
        f"<tr><td>{html.escape(p['config'])}</td><td>{p['hw']}</td><td>{100 * p['top1']:.2f}</td><td>{p['energy_uj']:.3f}</td>"
        f"<td>{p['latency_ms']:.4f}</td><td>{p['area_mm2']:.3f}</td><td>{'yes' if p['pareto_energy'] else ''}</td></tr>"
        for p in sorted(points, key=lambda p: (p["hw"], -p["top1"])))
    search_rows = "".join(
        f"<li>{html.escape(s['search'])} on {s['hw']}: {html.escape(s['budget'])} (reached {s['budget_value']:.4g}), "
        f"held-out top-1 {100 * s['held_out_top1']:.2f} %, {s['fitness_evaluations']} held-out evaluations, "
        f"{s['seconds']} s; map <code>{html.escape(s['map'])}</code></li>" for s in searches)
    compared = ""
    if nsga:
        _fronts_plot(nsga, out / "search_fronts.png")
        plots.append((out / "search_fronts.png", "search fronts: NSGA-II vs Greedy MP"))
        compared = "<h2>NSGA-II (Optuna) vs Greedy MP</h2><ul>" + "".join(
            f"<li>{e['hw']}: NSGA-II hypervolume {e['hypervolume']:.4g} ({nsga['trials']} evaluations)"
            + (f", Greedy MP {e['greedy_hypervolume']:.4g} ({e['greedy_evaluations']} evaluations); on the energies both "
               f"reach ({e['shared_range_uj'][0]:.4g} uJ and up) NSGA-II {e['shared_hypervolume']:.4g}, greedy "
               f"{e['greedy_shared_hypervolume']:.4g}; NSGA-II matches or beats {100 * e['greedy_points_covered']:.0f} % "
               f"of the greedy front; better front: <b>{e['better']}</b> (hypervolumes within "
               f"{e['hypervolume_resolution']:.3g}, one held-out image's top-1 over the shared range, are a match)"
               if "greedy_front" in e else "") + "</li>" for e in nsga["per_hw"]) + "</ul>"
    failed = "".join(f"<li><b>{html.escape(f['config'])}</b> ({html.escape(f['task'])}):<pre>{html.escape(f['error'])}</pre></li>"
                     for f in failures or [])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vitsim explore: {html.escape(info['model'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} figure{{display:inline-block;margin:8px}}
img{{max-width:100%}}</style></head>
<body data-plots="{len(plots)}">
<h1>vitsim explore: {html.escape(info['model'])} ({html.escape(info['method'])})</h1>
<p>Integer top-1 from hwsim on {info['test_images']} test images; cost from hwsim's cost model (docs/hardware.md).
Calibration on {info['calibration_images']} training images; searches measured on {info['held_out_images']} held-out
training images. {len(points)} points. Run on {html.escape(info.get('engine', 'this process'))}.</p>
{"<h2>Failed tasks</h2><ul>" + failed + "</ul>" if failed else ""}
{compared}
{"<h2>Mixed-precision searches</h2><ul>" + search_rows + "</ul>" if searches else ""}
<h2>Plots</h2>
{''.join(_img(p, alt) for p, alt in plots)}
<h2>Points</h2>
<table><tr><th>config</th><th>hardware</th><th>top-1 %</th><th>energy uJ</th><th>latency ms</th><th>area mm&sup2;</th><th>Pareto (energy)</th></tr>
{rows}</table>
{PLOTS_LOADED_SCRIPT}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path

"""The ``vitsim verify --report`` page: one self-contained HTML file with the run's layers (bit-exact, cycles against
the model, energy, first mismatch) and its functional coverage (rtl.coverage): per point, every bin with its hit
count, missed bins in red, bins only the directed jobs (rtl.directed) hit marked, and a bar per point."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vitsim.report import PLOTS_LOADED_SCRIPT, _img  # noqa: E402


def _coverage_bars(cov: dict[str, Any], path: Path) -> None:
    names = list(cov["points"])
    pct = [100.0 * cov["points"][n]["hit"] / cov["points"][n]["bins"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1))
    ax.barh(names, pct, color=["#2a7" if p == 100 else "#d84" for p in pct])
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("bins hit (%)")
    ax.set_title(f"functional coverage: {cov['hit']}/{cov['bins']} bins ({cov['percent']:.1f} %)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_verify_report(result: dict[str, Any], path: Path) -> Path:
    """Write ``result`` (vitsim.verify.verify's) as ``path`` (an .html file; its plot is written beside it and
    inlined)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"<tr><td style='text-align:left'>{html.escape(x['layer'])}</td>"
        f"<td style='color:{'#070' if x['bit_exact'] else '#c00'}'>{'bit-exact' if x['bit_exact'] else 'MISMATCH'}</td>"
        f"<td>{x['rtl_cycles']}</td><td>{x['model_cycles']}</td><td>{'' if x['energy_pj'] is None else x['energy_pj']}</td>"
        f"<td>{x['wall_s']}</td><td style='text-align:left'>"
        f"{html.escape(json.dumps(x['first_mismatch'])[:300]) if x['first_mismatch'] else ''}</td></tr>"
        for x in result["layers"])
    cov = result.get("coverage")
    plots, cov_html = [], "<p>No GEMM jobs ran: no coverage.</p>"
    if cov:
        png = path.with_suffix(".coverage.png")
        _coverage_bars(cov, png)
        plots.append((png, "coverage per point"))
        directed = set(cov.get("directed_only", []))
        cells = []
        for name, p in cov["points"].items():
            bins = " ".join(
                f"<span class='bin {'miss' if not n else 'dir' if f'{name}.{label}' in directed else 'hit'}'>"
                f"{html.escape(label)}&nbsp;{n}</span>" for label, n in p["hits"].items())
            cells.append(f"<tr><td style='text-align:left'>{html.escape(name)}</td><td>{p['hit']}/{p['bins']}</td>"
                         f"<td style='text-align:left'>{bins}</td></tr>")
        cov_html = (f"<p>{cov['hit']} of {cov['bins']} bins hit ({cov['percent']:.1f} %); a bin's count is the number "
                    f"of GEMM jobs that hit it. <span class='bin miss'>missed</span> <span class='bin dir'>hit by "
                    f"directed jobs only</span> <span class='bin hit'>hit by the layers</span></p>"
                    f"<table><tr><th>point</th><th>bins</th><th>bins and hits</th></tr>{''.join(cells)}</table>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vitsim verify: {html.escape(result['program'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} img{{max-width:100%}}
.bin{{display:inline-block;margin:1px;padding:0 4px;border-radius:3px;font-size:12px}} .hit{{background:#cec}}
.dir{{background:#cde}} .miss{{background:#f99}}</style></head>
<body data-plots="{len(plots)}">
<h1>vitsim verify: {html.escape(result['program'])}</h1>
<p>Block {result['block']} on a {result['array']} array, {html.escape(result['sim'])}, DUT
{html.escape(result['dut'])}; {'all bit-exact' if result['all_bit_exact'] else '<b>mismatches</b>'};
cycles equal to the model: {result['cycles_equal']}; {result['total_cycles']} cycles simulated at
{result['simulated_cycles_per_s']} cycles/s; {result['wall_s']} s ({html.escape(result['engine'])}).</p>
<h2>Functional coverage</h2>
{''.join(_img(p, alt) for p, alt in plots)}
{cov_html}
<h2>Layers</h2>
<table><tr><th>layer</th><th>result</th><th>RTL cycles</th><th>model cycles</th><th>energy pJ</th><th>wall s</th>
<th>first mismatch</th></tr>{rows}</table>
{PLOTS_LOADED_SCRIPT}
</body></html>
"""
    path.write_text(page)
    return path

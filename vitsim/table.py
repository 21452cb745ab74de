"""``vitsim table``: every PTQ method x model x bit-width, quantized, exported and run on hwsim, as one README table.

Each row is ``vitsim quantize`` (vitsim.pipelines.quantize) with the method's default calibration set: fp32, fake-quant
and integer top-1, their agreement, the calibration images and the wall time of quantization (calibration, scale
choice, learning, export; evaluation excluded). Rows are appended to a JSON-lines results file (``results.jsonl`` in
the output folder unless one is named) as they finish, and a re-run of the same command skips the rows already there,
so a long table survives an interruption and, with the results file kept in the repository (``make table``), goes on
on another machine. A row carries the method's fingerprint (a hash of the code, docstrings aside, of the files of the
method's class and its parent methods): a row measured before a method changed is measured again, never shown as the
new method's.
The markdown goes to ``table.md``, and with ``readme`` replaces the part of that file between the markers
``<!-- vitsim table: begin -->`` and ``<!-- vitsim table: end -->``.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- vitsim table: begin -->", "<!-- vitsim table: end -->"
DEFAULT_MODELS = ("deit_fmnist", "swin_fmnist")
DEFAULT_BITS = ("W3A3", "W4A4", "W6A6", "W4A8")


def parse_bits(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"W(\d)A(\d)", text.strip().upper())
    if not m:
        raise ValueError(f"bit-width {text!r}: expected the form W4A4")
    return int(m.group(1)), int(m.group(2))


def _key(row: dict[str, Any]) -> tuple:
    return (row["model"], row["method"], row["wbits"], row["abits"], row["calib"], row.get("limit"),
            row.get("fingerprint"))


def method_fingerprint(method: object) -> str:
    """12 hex digits of SHA-256 over the code of every file in ``quant.methods`` that defines the method's class or
    one of its parents: what a change to the method's choices or defaults touches. The code is read as its syntax
    tree without docstrings (comments are not in it), so editing prose re-measures nothing."""
    files = sorted({inspect.getsourcefile(c) for c in type(method).__mro__
                    if c.__module__.startswith("quant.methods.")})
    h = hashlib.sha256()
    for f in files:
        h.update(ast.dump(_without_docstrings(ast.parse(Path(f).read_text()))).encode())
    return h.hexdigest()[:12]


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _load_done(path: Path) -> dict[tuple, dict[str, Any]]:
    done: dict[tuple, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[_key(row)] = row
    return done


def table_row(model: str, method: str, wbits: int, abits: int, calib: int, limit: int | None, program: str,
              fingerprint: str) -> dict[str, Any]:
    """One row (a task of vitsim.engine): ``vitsim quantize`` of the method at W/A, its accuracies and wall time."""
    import torch

    from vitsim.pipelines import make_recipe, quantize

    recipe = make_recipe(model, method, wbits, abits, None, calib, 0, None, None)
    r = quantize(recipe, program, limit, progress=False)
    row = {k: r[k] for k in ("model", "method", "wbits", "abits", "calib", "n", "fp32_top1", "quant_top1", "int_top1",
                             "agreement", "quantize_s")}
    row["limit"], row["fingerprint"] = limit, fingerprint
    # reconstruction sums floats in an order that depends on the thread count, so a row is reproduced bit for bit
    # only with as many torch threads as it was measured with (a Dask worker has one)
    row["threads"] = torch.get_num_threads()
    return row


def build_table(models: list[str], methods: list[str], bits: list[str], out_dir: str, limit: int | None = None,
                calib: dict[str, int] | None = None, fresh: bool = False, progress: bool = True,
                results_file: str | None = None, workers: int | None = 0,
                scheduler: str | None = None) -> list[dict[str, Any]]:
    """Run (or read back) every row; returns them in table order (model, bits, method). Rows go to ``results_file``
    (default ``out_dir/results.jsonl``) as each finishes, programs to ``out_dir/programs``. The rows to measure are
    tasks on ``Engine(workers, scheduler)`` (vitsim.engine; default: in this process); a row that raises is returned
    with its ``error`` (and not written, so the next run measures it again) and the others go on."""
    from quant.methods import METHODS, get_method
    from vitsim.engine import Engine

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    out = Path(out_dir)
    (out / "programs").mkdir(parents=True, exist_ok=True)
    results = Path(results_file) if results_file else out / "results.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    if fresh and results.exists():
        results.unlink()
    done = _load_done(results)
    instances = {m: get_method(m) for m in methods}
    fingerprints = {m: method_fingerprint(instances[m]) for m in methods}
    slots: list[tuple[tuple, dict[str, Any] | None]] = []
    tasks = []
    for model in models:
        for text in bits:
            w, a = parse_bits(text)
            for method in methods:
                n_calib = (calib or {}).get(method, instances[method].calibration_images)
                key = (model, method, w, a, n_calib, limit, fingerprints[method])
                slots.append((key, {**done[key], "cached": True} if key in done else None))
                if key not in done:
                    program = str(out / "programs" / f"{model}_{method}_w{w}a{a}.vitp")
                    tasks.append((f"{model}/{method}/W{w}A{a}", (model, method, w, a, n_calib, limit, program,
                                                                 fingerprints[method])))

    def finished(outcome) -> None:
        if outcome.ok:
            with results.open("a") as f:
                f.write(json.dumps(outcome.value, sort_keys=True) + "\n")
        if progress:
            if outcome.ok:
                row = outcome.value
                print(f"table: {outcome.key}: integer {100 * row['int_top1']:.2f} %, fake-quant "
                      f"{100 * row['quant_top1']:.2f} %, agreement {100 * row['agreement']:.2f} %, "
                      f"{row['quantize_s']:.0f} s", file=sys.stderr, flush=True)
            else:
                print(f"table: {outcome.key} FAILED: {outcome.error}", file=sys.stderr, flush=True)

    measured = {}
    if tasks:
        # in this process, rows keep the machine's threads (each row records how many it was measured with)
        with Engine(workers, scheduler, progress, inline_one_thread=False) as engine:
            if progress:
                print(f"table: {len(tasks)} rows to measure on {engine.describe()}", file=sys.stderr, flush=True)
            for (_, args), outcome in zip(tasks, engine.map(table_row, tasks, desc="table rows", on_outcome=finished)):
                model, method, w, a, n_calib, limit_, _, fingerprint = args
                key = (model, method, w, a, n_calib, limit_, fingerprint)
                measured[key] = ({**outcome.value, "cached": False} if outcome.ok else
                                 {"model": model, "method": method, "wbits": w, "abits": a, "calib": n_calib,
                                  "error": outcome.error, "cached": False})
    return [row if row is not None else measured[key] for key, row in slots]


def markdown(rows: list[dict[str, Any]]) -> str:
    """One table per model: rows W/A x method, with the fp32 top-1 under each."""
    lines = []
    failed = [r for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        lines += [f"**{model}** (fp32 {100 * mine[0]['fp32_top1']:.2f} % on {mine[0]['n']} test images)", "",
                  "| W/A | method | integer top-1 | fake-quant top-1 | agreement | drop vs fp32 | calibration images | "
                  "quantize time |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in mine:
            drop = 100 * (r["fp32_top1"] - r["int_top1"])
            lines.append(f"| W{r['wbits']}A{r['abits']} | {r['method']} | {100 * r['int_top1']:.2f} % | "
                         f"{100 * r['quant_top1']:.2f} % | {100 * r['agreement']:.2f} % | {drop:.2f} pt | "
                         f"{r['calib']} | {_duration(r['quantize_s'])} |")
        lines.append("")
    for r in failed:
        lines.append(f"- {r['model']} {r['method']} W{r['wbits']}A{r['abits']}: failed ({r['error'].splitlines()[0]})")
    return "\n".join(lines).rstrip() + "\n"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def markers(section: str = "") -> tuple[str, str]:
    """The comments around a generated table: ``BEGIN``/``END``, or with the section's name in them."""
    if not section:
        return BEGIN, END
    if not re.fullmatch(r"[a-z0-9_-]+", section):
        raise ValueError(f"table section {section!r}: use lower-case letters, digits, - and _")
    return f"<!-- vitsim table {section}: begin -->", f"<!-- vitsim table {section}: end -->"


def write_readme(path: str, table: str, command: str, section: str = "") -> None:
    """Replace the marked section of ``path`` (``markers(section)``) with ``table`` (and the command that made it)."""
    begin, end = markers(section)
    p = Path(path)
    text = p.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{path}: no {begin} ... {end} section to replace")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    p.write_text(f"{head}{begin}\n<!-- generated by `{command}`; edit the command, not the table -->\n\n{table}\n{end}{tail}")


def qat_markdown(ptq_rows: list[dict[str, Any]], qat_rows: list[dict[str, Any]]) -> str:
    """Q-ViT (``vitsim qat`` results) beside the best PTQ method of the same model and bit-width: integer top-1 on the
    test set, the gain, agreement and the training time."""
    lines = ["| model | W/A | best PTQ method | PTQ integer top-1 | Q-ViT integer top-1 | gain | fp32 | Q-ViT fake-quant | "
             "agreement | epochs | training time |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for q in qat_rows:
        same = [r for r in ptq_rows if (r["model"], r["wbits"], r["abits"]) == (q["model"], q["wbits"], q["abits"])
                and "error" not in r]
        best = max(same, key=lambda r: r["int_top1"]) if same else None
        ptq = f"{best['method']} | {100 * best['int_top1']:.2f} %" if best else "n/a | n/a"
        gain = f"{100 * (q['int_top1'] - best['int_top1']):+.2f} pt" if best else "n/a"
        pot = " (PoT)" if q.get("pot") else ""
        lines.append(f"| {q['model']} | W{q['wbits']}A{q['abits']}{pot} | {ptq} | {100 * q['int_top1']:.2f} % | {gain} | "
                     f"{100 * q['fp32_top1']:.2f} % | {100 * q['quant_top1']:.2f} % | {100 * q['agreement']:.2f} % | "
                     f"{q['epochs']} | {_duration(q['train_s'])} |")
    return "\n".join(lines) + "\n"


def read_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a JSON-lines results file, the last one of each (model, method, bits, pot) kept."""
    rows: dict[tuple, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[(r["model"], r["method"], r["wbits"], r["abits"], r.get("pot", False))] = r
    return list(rows.values())

"""``vitsim table`` (vitsim/table.py): rows are measured once and read back on a re-run, the README section between
the markers is the only text replaced, and bad arguments are clear errors."""
from __future__ import annotations

import json

import pytest

from quant.methods.isvit import ISViT
from quant.methods.minmax import MinMax
from quant.methods.repq import RepQViT
from vitsim.table import BEGIN, END, build_table, markdown, method_fingerprint, parse_bits, write_readme


def test_rows_are_measured_then_read_back_on_a_rerun(tmp_path):
    rows = build_table(["deit_fmnist"], ["minmax"], ["W8A8"], str(tmp_path), limit=40, progress=False)
    assert len(rows) == 1 and not rows[0]["cached"]
    r = rows[0]
    assert r["calib"] == 256 and r["n"] == 40 and r["agreement"] >= 0.99 and r["int_top1"] > 0.8
    assert (tmp_path / "programs" / "deit_fmnist_minmax_w8a8.vitp").exists()
    again = build_table(["deit_fmnist"], ["minmax"], ["W8A8"], str(tmp_path), limit=40, progress=False)
    assert again[0]["cached"] and {k: v for k, v in again[0].items() if k != "cached"} == \
        {k: v for k, v in r.items() if k != "cached"}
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1  # nothing counted twice
    table = markdown(again)
    assert "| W8A8 | minmax |" in table and f"{100 * r['int_top1']:.2f} %" in table


def test_a_different_limit_is_a_different_row(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps(
        {"model": "deit_fmnist", "method": "minmax", "wbits": 8, "abits": 8, "calib": 256, "limit": 10, "n": 10,
         "fp32_top1": 1.0, "quant_top1": 1.0, "int_top1": 1.0, "agreement": 1.0, "quantize_s": 1.0}) + "\n")
    rows = build_table(["deit_fmnist"], ["minmax"], ["W8A8"], str(tmp_path), limit=20, progress=False)
    assert not rows[0]["cached"] and rows[0]["n"] == 20


def test_the_readme_section_between_the_markers_is_replaced(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    write_readme(str(readme), "| new |\n", "vitsim table --bits W4A4")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{END}\noutro\n")
    assert "old table" not in text and "| new |" in text and "vitsim table --bits W4A4" in text
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no <!-- vitsim table"):
        write_readme(str(readme), "x", "y")


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(ValueError, match="W4A4"):
        parse_bits("4/4")
    with pytest.raises(ValueError, match="unknown methods"):
        build_table(["deit_fmnist"], ["bogus"], ["W8A8"], str(tmp_path), progress=False)


def test_a_row_of_a_changed_method_is_measured_again(tmp_path):
    """Rows carry the method's fingerprint: a row measured before the method's source changed is not reused."""
    stale = {"model": "deit_fmnist", "method": "minmax", "wbits": 8, "abits": 8, "calib": 256, "limit": 20, "n": 20,
             "fp32_top1": 1.0, "quant_top1": 1.0, "int_top1": 1.0, "agreement": 1.0, "quantize_s": 1.0,
             "fingerprint": "000000000000"}
    results = tmp_path / "elsewhere" / "rows.jsonl"
    results.parent.mkdir()
    results.write_text(json.dumps(stale) + "\n")
    rows = build_table(["deit_fmnist"], ["minmax"], ["W8A8"], str(tmp_path), limit=20, progress=False,
                       results_file=str(results))
    assert not rows[0]["cached"]
    assert rows[0]["fingerprint"] == method_fingerprint(MinMax())
    assert len(results.read_text().splitlines()) == 2 and not (tmp_path / "results.jsonl").exists()


def _fingerprints(tmp_path, monkeypatch):
    """fingerprint(files, module): write ``files`` (name -> source) into a scratch ``quant.methods`` package, import
    ``module`` afresh and fingerprint its class ``M``."""
    import importlib
    import sys

    pkg = tmp_path / "quant" / "methods"
    pkg.mkdir(parents=True)
    (tmp_path / "quant" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def fingerprint(files: dict[str, str], module: str) -> str:
        for name, source in files.items():
            (pkg / f"{name}.py").write_text(source)
        for mod in [m for m in sys.modules if m == "quant" or m.startswith("quant.")]:
            monkeypatch.delitem(sys.modules, mod)
        importlib.invalidate_caches()
        return method_fingerprint(importlib.import_module(f"quant.methods.{module}").M())

    return fingerprint


def test_the_fingerprint_covers_the_parent_methods_files(tmp_path, monkeypatch):
    """A method built on another (I&S-ViT on RepQ-ViT): a change to the parent's file changes the child's
    fingerprint, though the child's own file is the same."""
    assert method_fingerprint(ISViT()) != method_fingerprint(RepQViT()) != method_fingerprint(MinMax())
    fingerprint = _fingerprints(tmp_path, monkeypatch)   # from here on the real quant.methods is out of sys.modules
    child = "from quant.methods.parent import P\nclass M(P):\n    pass\n"
    before = fingerprint({"parent": "class P:\n    lr = 1e-3\n", "child": child}, "child")
    after = fingerprint({"parent": "class P:\n    lr = 3e-3\n", "child": child}, "child")
    assert before != after


def test_the_fingerprint_follows_code_not_prose(tmp_path, monkeypatch):
    """A changed constant changes the fingerprint; a changed docstring or comment does not."""
    fingerprint = _fingerprints(tmp_path, monkeypatch)
    base = fingerprint({"m": '"""Doc."""\nclass M:\n    """Doc."""\n    lr = 1e-3\n'}, "m")
    prose = fingerprint({"m": '"""Other doc."""\nclass M:\n    """More doc."""\n    lr = 1e-3  # why\n'}, "m")
    code = fingerprint({"m": '"""Doc."""\nclass M:\n    """Doc."""\n    lr = 3e-3\n'}, "m")
    assert base == prose != code


def test_qat_table_sets_each_qat_row_beside_the_best_ptq_method_of_its_model_and_bits(tmp_path):
    from vitsim.table import qat_markdown, read_rows

    def ptq(model, method, w, top1):
        return {"model": model, "method": method, "wbits": w, "abits": w, "int_top1": top1}

    ptq_rows = [ptq("deit_fmnist", "pfcr", 3, 0.8722), ptq("deit_fmnist", "minmax", 3, 0.40),
                ptq("deit_fmnist", "pfcr", 2, 0.5274), ptq("deit_fmnist", "p2vit", 2, 0.60),
                ptq("swin_fmnist", "mptq", 3, 0.95)]
    results = tmp_path / "qat.jsonl"
    base = {"method": "qvit", "fp32_top1": 0.9114, "quant_top1": 0.9, "agreement": 1.0, "epochs": 3, "train_s": 2700}
    lines = [{**base, "model": "deit_fmnist", "wbits": 3, "abits": 3, "int_top1": 0.80},   # superseded below
             {**base, "model": "deit_fmnist", "wbits": 3, "abits": 3, "int_top1": 0.8950},
             {**base, "model": "deit_fmnist", "wbits": 2, "abits": 2, "int_top1": 0.7000}]
    results.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = read_rows(str(results))
    assert [r["int_top1"] for r in rows] == [0.8950, 0.7000]
    table = qat_markdown(ptq_rows, rows)
    assert "| deit_fmnist | W3A3 | pfcr | 87.22 % | 89.50 % | +2.28 pt |" in table
    assert "| deit_fmnist | W2A2 | p2vit | 60.00 % | 70.00 % | +10.00 pt |" in table
    assert "45 min 00 s" in table


def test_rows_on_two_dask_workers_equal_rows_in_process_and_a_failing_row_is_reported(tmp_path):
    """The same rows, in the same order, whether this process or two Dask workers measure them; a row that raises
    (an unknown model here) comes back with its error, is not written, and the other rows are measured."""
    bits = ["W8A8", "W4A4"]
    serial = build_table(["deit_fmnist"], ["minmax"], bits, str(tmp_path / "serial"), limit=40, progress=False)
    rows = build_table(["deit_fmnist", "no_such_model"], ["minmax"], bits, str(tmp_path / "dask"), limit=40,
                       progress=False, workers=2)
    measured = ("model", "method", "wbits", "abits", "n", "fp32_top1", "quant_top1", "int_top1", "agreement")
    assert [{k: r[k] for k in measured} for r in rows[:2]] == [{k: r[k] for k in measured} for r in serial]
    assert all(r["threads"] == 1 for r in rows[:2])  # one torch thread per worker
    assert [r["model"] for r in rows[2:]] == ["no_such_model"] * 2
    assert all("no_such_model" in r["error"] for r in rows[2:])
    written = [json.loads(line) for line in (tmp_path / "dask" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["model"], r["wbits"]) for r in written) == [("deit_fmnist", 4), ("deit_fmnist", 8)]
    assert "no_such_model minmax W8A8: failed" in markdown(rows)

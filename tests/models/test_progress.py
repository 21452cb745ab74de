"""Progress output: off a terminal, one line when a stage starts and one when it ends, never tqdm's frames."""
from __future__ import annotations

from models.progress import progress


def test_non_terminal_progress_is_one_line_per_stage(capsys):
    assert list(progress(range(50), "calibrate", "batch")) == list(range(50))
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 2
    assert err.startswith("calibrate: 50 batch ...") and "done in" in err


def test_disabled_progress_prints_nothing(capsys):
    assert list(progress(iter("abc"), "eval", enabled=False)) == ["a", "b", "c"]
    assert capsys.readouterr().err == ""

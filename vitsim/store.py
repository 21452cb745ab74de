"""Resumable results: every finished task of a long run is written to SQLite in the run's output folder the moment it
completes, so re-running the same command after an interruption (Ctrl-C, a killed worker or scheduler, a crash) skips
what is done and runs the rest, with nothing lost and nothing counted twice.

A run is named by a fingerprint of everything its results depend on (``fingerprint``); a task by a key unique within
the run. A command run with other parameters gets another fingerprint, so it never reads stale results. Values are
stored as JSON: Python's JSON writes floats with ``repr``, which reads back to the same double, so a resumed run writes
the same bytes as an uninterrupted one. A task that raised is stored with its error and counts as done (re-running
does not retry it; ``--retry-failed`` on the commands that have it does).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """CREATE TABLE IF NOT EXISTS results (
    run TEXT NOT NULL, key TEXT NOT NULL, value TEXT, error TEXT, seconds REAL, finished REAL,
    PRIMARY KEY (run, key))"""


PACKAGES = ("models", "quant", "hwsim")   # the code a stored result depends on (vitsim itself only schedules)


def code_fingerprint() -> str:
    """A hash of the sources (and bundled checkpoints and configurations) that compute the results: a run after a
    code change measures again instead of mixing old and new numbers."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".yaml", ".json", ".safetensors") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(params: dict[str, Any]) -> str:
    """A short stable name for a run's parameters (JSON with sorted keys, SHA-256)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Outcome:
    """One task's result: ``value`` (JSON-able) or the ``error`` it raised (``"Type: message"`` and the traceback)."""

    key: str
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    resumed: bool = False    # read back from the store, not computed by this run

    @property
    def ok(self) -> bool:
        return self.error is None


class ResultStore:
    """The finished tasks of one run in ``path`` (SQLite, safe to share with other runs of other fingerprints)."""

    def __init__(self, path: str | Path, run: str) -> None:
        self.path, self.run = Path(path), run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._db.commit()

    def finished(self, retry_failed: bool = False, keys: list[str] | None = None) -> dict[str, Outcome]:
        """Key -> outcome of every task of this run already done (failed ones too unless ``retry_failed``); with
        ``keys``, of those tasks only (a search asks for a few keys per step of a store that holds hundreds)."""
        query = "SELECT key, value, error, seconds FROM results WHERE run = ?"
        if keys is None:
            rows = self._db.execute(query, (self.run,)).fetchall()
        else:
            rows = [r for k in keys for r in self._db.execute(query + " AND key = ?", (self.run, k)).fetchall()]
        return {k: Outcome(k, None if v is None else json.loads(v), e, s or 0.0, True)
                for k, v, e, s in rows if not (retry_failed and e is not None)}

    def put(self, outcome: Outcome) -> None:
        """Persist one finished task now (committed before the next one is awaited)."""
        value = None if outcome.value is None else json.dumps(outcome.value, sort_keys=True)
        self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                         (self.run, outcome.key, value, outcome.error, outcome.seconds, time.time()))
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""The task engine (vitsim.engine) and its results store (vitsim.store): order, failures, dead workers, resumption."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vitsim.engine import Engine, EngineError
from vitsim.store import Outcome, ResultStore, fingerprint


def _square_plus(x: int, offset: np.ndarray) -> dict:
    if x == 3:
        raise ValueError("three is not allowed")
    return {"x": x, "y": x * x + float(offset.sum()), "pid": os.getpid()}


def _die_once(x: int, marker: str) -> int:
    """Kill this worker process the first time it runs (the nanny restarts it and the scheduler re-runs the task)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died")
        os._exit(1)
    return x + 100


TASKS = [(f"t{x}", (x,)) for x in (5, 1, 4, 3, 2, 0)]


@pytest.fixture(scope="module")
def engine2():
    with Engine(workers=2, progress=False) as engine:
        yield engine


def test_outcomes_in_task_order_same_for_inline_and_two_workers(engine2):
    """Outcomes come back in task order whatever order workers finish in, a shared constant reaches every task, and
    an exception becomes that task's recorded error while the rest still run."""
    offset = np.full(1000, 0.5)
    with Engine(workers=0, progress=False) as inline:
        serial = inline.map(_square_plus, TASKS, {"offset": inline.share(offset)})
    parallel = engine2.map(_square_plus, TASKS, {"offset": engine2.share(offset)})
    assert [o.key for o in parallel] == [k for k, _ in TASKS]
    assert [o.value and o.value["y"] for o in parallel] == [o.value and o.value["y"] for o in serial] == \
        [525.0, 501.0, 516.0, None, 504.0, 500.0]
    failed = parallel[3]
    assert not failed.ok and failed.error.startswith("ValueError: three is not allowed") and "_square_plus" in failed.error
    assert len({o.value["pid"] for o in parallel if o.ok}) == 2  # both workers ran tasks
    assert len({o.value["pid"] for o in serial if o.ok}) == 1 and serial[0].value["pid"] == os.getpid()


def test_dead_worker_is_replaced_and_its_task_rerun(engine2, tmp_path):
    out = engine2.map(_die_once, [("a", (1,)), ("b", (2,))], {"marker": str(tmp_path / "marker")})
    assert [o.value for o in out] == [101, 102] and all(o.ok for o in out)
    assert (tmp_path / "marker").read_text() == "died"
    engine2.client.wait_for_workers(2, timeout=60)  # the nanny restarts the dead worker (raises if it does not)


def test_store_resumes_without_recomputing_or_double_counting(tmp_path):
    """A run that stopped after some tasks: the re-run computes only the rest and returns the same outcomes; a run
    with other parameters (another fingerprint) shares the file but none of the results."""
    path = tmp_path / "results.sqlite"
    run = fingerprint({"model": "m", "n": 6})
    with ResultStore(path, run) as store, Engine(workers=0, progress=False) as engine:
        first = engine.map(_square_plus, TASKS[:2], {"offset": np.zeros(1)}, store)
    with ResultStore(path, run) as store, Engine(workers=0, progress=False) as engine:
        assert set(store.finished()) == {"t5", "t1"}
        full = engine.map(_square_plus, TASKS, {"offset": np.zeros(1)}, store)
        assert [o.resumed for o in full] == [True, True, False, False, False, False]
        assert [o.value for o in full[:2]] == [o.value for o in first]
        assert len(store.finished()) == 6 and "t3" not in store.finished(retry_failed=True)
    with ResultStore(path, fingerprint({"model": "m", "n": 7})) as other:
        assert other.finished() == {}


def test_floats_survive_the_store_exactly(tmp_path):
    values = [0.1, 1 / 3, 2.0 ** -40, 123456.789e-300, float(np.float32(0.7))]
    with ResultStore(tmp_path / "r.sqlite", "x") as store:
        store.put(Outcome("k", {"v": values}))
    with ResultStore(tmp_path / "r.sqlite", "x") as store:
        assert store.finished()["k"].value["v"] == values


def test_misuse_is_refused():
    with pytest.raises(EngineError):
        Engine(workers=-1)
    with pytest.raises(EngineError, match="with Engine"):
        Engine(workers=2).map(_square_plus, TASKS[:1])
    with pytest.raises(EngineError, match="unique"):
        Engine(workers=0).map(_square_plus, [("a", (1,)), ("a", (2,))], {"offset": np.zeros(1)})


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def test_a_running_cluster_is_used_through_its_scheduler_address(monkeypatch):
    """`--scheduler ADDRESS`: the engine connects to a cluster it did not start (here one started by the test, with
    workers of 2 threads) and still sets up its workers (one torch thread) before the first task."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        with Engine(scheduler=cluster.scheduler_address, progress=False) as engine:
            assert engine.describe() == f"Dask cluster at {cluster.scheduler_address}" and engine.worker_count() == 2
            assert [o.value for o in engine.map(_threads, [("a", ()), ("b", ())])] == [1, 1]
    monkeypatch.setattr(Engine, "connect_timeout", "2s")
    with pytest.raises(EngineError, match="no Dask scheduler answers"):
        with Engine(scheduler="tcp://127.0.0.1:9", progress=False):
            pass


def _worker_state() -> dict:
    import sys

    loaded = {m: m in sys.modules for m in ("torch", "numba", "timm")}
    import numba
    import torch

    return {**loaded, "torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads()}


def test_workers_start_light_and_single_threaded():
    """A worker imports nothing heavy before its first task (an RTL-only run never pays for torch and timm: importing
    them up front made a 2-worker verify spend ~7 s starting its cluster) and still runs torch and numba on one
    thread once a task loads them."""
    with Engine(workers=1, progress=False) as engine:
        state = engine.map(_worker_state, [("s", ())])[0].value
    assert state == {"torch": False, "numba": False, "timm": False, "torch_threads": 1, "numba_threads": 1}


def _loaded(name: str) -> bool:
    import sys

    return name in sys.modules


def test_a_background_start_preloads_every_worker_and_raises_its_error_on_first_use():
    """``background``: the with block is entered at once; the first use waits for the cluster, whose workers have
    imported the preload modules by then. A start that fails (no scheduler at the address) raises on first use."""
    with Engine(workers=2, progress=False, preload=("vitsim.vectors",), background=True) as engine:
        assert engine.worker_count() == 2
        loaded = engine.client.run(_loaded, "vitsim.vectors")
        assert len(loaded) == 2 and all(loaded.values())
    nobody = Engine(scheduler="tcp://127.0.0.1:9", progress=False, background=True)
    nobody.connect_timeout = "1s"
    with nobody as engine:
        with pytest.raises(EngineError, match="no Dask scheduler"):
            engine.worker_count()


def test_a_shared_constant_is_unpickled_once_per_process_and_the_memo_stays_bounded():
    """Engine.share ships a pickle; a worker unpickles it at the first task that reads it and reuses that object
    after, keeping the most recent constants only (a long-lived cluster serves run after run)."""
    import pickle

    from vitsim import engine as eng

    first = eng.Pickled("tok-first", pickle.dumps({"a": np.arange(3)}))
    a, b = eng._value(first), eng._value(first)
    assert a is b and list(a["a"]) == [0, 1, 2]
    for i in range(eng.UNPICKLED_KEPT + 3):
        eng._value(eng.Pickled(f"tok-{i}", pickle.dumps(i)))
    assert len(eng._UNPICKLED) <= eng.UNPICKLED_KEPT and "tok-first" not in eng._UNPICKLED
    assert eng._value(first) is not a and eng._value(7) == 7   # unpickled again; plain values pass through

"""Run many independent tasks (an exploration's configurations, a methods table's rows, an RTL regression's jobs) on
Dask distributed (https://distributed.dask.org), persisting each result as it completes (vitsim.store).

- ``Engine(workers=N)`` starts a local cluster of N single-threaded worker processes (default: one per core; each
  worker runs torch and numba on one thread, so N workers use N cores); ``Engine(scheduler="tcp://host:8786")`` uses a
  running cluster instead; ``Engine(workers=0)`` runs the tasks one after another in this process, on one thread like
  a worker, without Dask (for debugging and profiling: same results).
- ``Engine(..., preload=("vitsim.verify",), background=True)``: the cluster starts, and its workers import the
  modules the tasks need, in a thread while this process prepares the tasks (a worker's first task would otherwise
  pay for the imports); the first call that needs the cluster waits.
- ``share(value)`` sends a large constant (a calibration, test images, a program) to every worker once, pickled;
  each worker unpickles it at its first task that reads it and keeps it (tasks receive the value as an argument).
  Scattering the object itself would have Dask unpickle it on one worker after the other while it replicates it
  (a deit_fmnist calibration: 2.5 s on one worker, 4.8 s on two, all of it before the first task).
- ``map(fn, tasks, shared, store)`` runs ``fn(*args, **shared)`` for every ``(key, args)`` task that ``store`` does not
  already hold, writes each outcome to the store as soon as it arrives, and returns the outcomes in task order, so what
  a caller writes does not depend on the number of workers or on the order tasks finish in.
- Failures: an exception inside a task becomes that task's recorded error (type, message, traceback) and the run goes
  on; a worker process that dies is restarted by its nanny and its task re-run on another worker (Dask's
  ``distributed.scheduler.allowed-failures``, 3 by default), after which the task is recorded as failed.

``fn`` must be a module-level function (workers import it by name) whose result is JSON-able (the store keeps JSON).
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import time
import traceback
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from vitsim.store import Outcome, ResultStore

Task = tuple[str, tuple]
# The environment a worker process starts with: one thread for every numeric library. It replaces Dask's default
# pre-spawn environment, whose MALLOC_TRIM_THRESHOLD_=65536 switches off glibc's adaptive mmap threshold, so every
# array over 64 KiB is a fresh mmap whose pages fault in again: hwsim allocates an activation per op, and a task took
# ~1.4x as long on a worker as in this process.
WORKER_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


class EngineError(RuntimeError):
    """The engine could not start (a scheduler that does not answer) or was misused."""


@dataclass(frozen=True)
class Pickled:
    """A shared constant as it travels: its pickle, and a token naming it in a worker's memo."""

    token: str
    blob: bytes


# This process's shared constants by token (``Engine.share``), the most recent first out: a worker of a long-lived
# cluster (--scheduler) serves run after run, and a run shares a handful of constants.
_UNPICKLED: OrderedDict[str, Any] = OrderedDict()
UNPICKLED_KEPT = 16


def _value(v: Any) -> Any:
    if not isinstance(v, Pickled):
        return v
    if v.token not in _UNPICKLED:
        _UNPICKLED[v.token] = pickle.loads(v.blob)
        while len(_UNPICKLED) > UNPICKLED_KEPT:
            _UNPICKLED.popitem(last=False)
    _UNPICKLED.move_to_end(v.token)
    return _UNPICKLED[v.token]


def run_task(fn: Callable[..., Any], key: str, args: tuple, **shared: Any) -> Outcome:
    """Run one task, turning an exception into a recorded error (on a worker, or in this process)."""
    start = time.perf_counter()
    try:
        value = fn(*args, **{k: _value(v) for k, v in shared.items()})
    except Exception as err:  # noqa: BLE001 - a failing task is a result to record, not a reason to stop the run
        text = f"{type(err).__name__}: {err}\n" + "".join(traceback.format_exception(err)[-6:])
        return Outcome(key, None, text, round(time.perf_counter() - start, 3))
    return Outcome(key, value, None, round(time.perf_counter() - start, 3))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Tasks in this process run on one thread, as on a worker: float reductions (reconstruction) then sum in the
    same order, so a result does not depend on the engine."""
    import torch

    from vitsim.pipelines import set_threads

    before = torch.get_num_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(before)


def _import_all(modules: tuple[str, ...]) -> None:
    import importlib

    for name in modules:
        importlib.import_module(name)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Engine:
    """See the module docstring. A context manager: the local cluster lives as long as the ``with`` block."""

    connect_timeout = "20s"   # how long a --scheduler address may take to answer

    def __init__(self, workers: int | None = None, scheduler: str | None = None, progress: bool = True,
                 inline_one_thread: bool = True, preload: Sequence[str] = (), background: bool = False) -> None:
        if workers is not None and workers < 0:
            raise EngineError(f"--workers {workers}: want 0 (in this process) or more")
        self.workers = default_workers() if workers is None and scheduler is None else workers
        self.scheduler = scheduler
        self.progress = progress
        self.inline_one_thread = inline_one_thread   # False: inline tasks use this process's threads
        self.preload_modules = tuple(preload)          # imported on every worker once it is up
        self.background = background                   # start in a thread; the first use waits (module docstring)
        self.client = None
        self._cluster = None
        self._starting: Future | None = None

    @property
    def inline(self) -> bool:
        return self.scheduler is None and self.workers == 0

    def describe(self) -> str:
        if self.inline:
            return "in this process (no Dask)"
        if self.scheduler:
            return f"Dask cluster at {self.scheduler}"
        return f"local Dask cluster, {self.workers} worker process{'es' if self.workers != 1 else ''} x 1 thread"

    def __enter__(self) -> "Engine":
        if self.inline:
            return self
        if self.background:
            pool = ThreadPoolExecutor(1, thread_name_prefix="engine-start")
            self._starting = pool.submit(self._start)
            pool.shutdown(wait=False)
        else:
            self._start()
        return self

    def _start(self) -> None:
        from distributed import Client, LocalCluster

        if self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout=self.connect_timeout)
            except OSError as err:
                raise EngineError(f"no Dask scheduler answers at {self.scheduler}: {err}") from err
        else:
            import dask

            # Dask's statistical profiler walks every worker thread's stack each 10 ms under the GIL; our tasks are
            # long and CPU-bound, so it only slows them (the dashboard's profile is not used here).
            with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_THREADS,
                                  "distributed.worker.profile.enabled": False}):
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self._cluster)
        from vitsim.dask_worker import WorkerSetup

        self.client.register_plugin(WorkerSetup())
        if self.preload_modules:
            self.client.run(_import_all, self.preload_modules)

    def __exit__(self, *exc: Any) -> None:
        if self._starting is not None:
            with contextlib.suppress(Exception):   # a failed start was raised to whoever used the engine
                self._starting.result()
            self._starting = None
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self.client = self._cluster = None

    def worker_count(self) -> int:
        """How many tasks run at once: the cluster's worker threads (1 when inline)."""
        if self.inline:
            return 1
        self._need_client()
        return max(1, sum(self.client.nthreads().values()))

    def share(self, value: Any) -> Any:
        """``value`` on every worker, once (a handle to pass in ``shared``); the value itself when inline."""
        if self.inline:
            return value
        self._need_client()
        shared = Pickled(uuid.uuid4().hex, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        return self.client.scatter(shared, broadcast=True, hash=False)

    def map(self, fn: Callable[..., Any], tasks: Sequence[Task], shared: dict[str, Any] | None = None,
            store: ResultStore | None = None, desc: str = "tasks", retry_failed: bool = False,
            on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Outcomes of ``fn(*args, **shared)`` for every ``(key, args)``, in task order (see the module docstring).
        ``on_outcome`` is called with each new outcome as it arrives (after the store has it)."""
        keys = [k for k, _ in tasks]
        if len(set(keys)) != len(keys):
            raise EngineError(f"{desc}: task keys must be unique")
        done = store.finished(retry_failed, keys) if store is not None else {}
        todo = [(k, a) for k, a in tasks if k not in done]
        results: dict[str, Outcome] = {k: done[k] for k in keys if k in done}
        if len(todo) < len(tasks) and todo:
            self._say(f"{desc}: {len(tasks) - len(todo)} of {len(tasks)} already done ({store.path}), {len(todo)} to run")
        for outcome in self._run(fn, todo, shared or {}, desc):
            if store is not None:
                store.put(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            results[outcome.key] = outcome
        return [results[k] for k in keys]

    def _run(self, fn: Callable[..., Any], todo: list[Task], shared: dict[str, Any], desc: str) -> Iterable[Outcome]:
        bar = self._bar(len(todo), desc)
        try:
            if self.inline:
                with _one_thread() if self.inline_one_thread else contextlib.nullcontext():
                    for key, args in todo:
                        yield run_task(fn, key, args, **shared)
                        bar.update()
                return
            self._need_client()
            from distributed import as_completed
            from distributed.scheduler import KilledWorker

            futures = {self.client.submit(run_task, fn, key, args, pure=False, **shared): key for key, args in todo}
            try:
                for future in as_completed(futures):
                    try:
                        outcome = future.result()
                    except KilledWorker as err:
                        outcome = Outcome(futures[future], None, f"KilledWorker: the task's worker died repeatedly ({err})")
                    bar.update()
                    yield outcome
            finally:
                self.client.cancel(list(futures))
        finally:
            bar.close()

    def _need_client(self) -> None:
        if self._starting is not None:
            self._starting.result()   # a background start: wait for it (and raise its error)
        if self.client is None:
            raise EngineError("use the engine inside `with Engine(...) as engine:`")

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="task", leave=False,
                    disable=not (self.progress and total and sys.stderr.isatty()))

    def _say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

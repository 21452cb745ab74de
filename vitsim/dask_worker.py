"""What every Dask worker of vitsim does before its first task (vitsim.engine registers it with the cluster, so
local, restarted and remote workers all get it): torch and numba on one thread (a worker is one core's worth of work),
and timm's torchvision guard (models._timm) armed, so unpickling a shipped model never imports torchvision on its own.
Nothing heavy is imported here: a worker that only runs RTL simulations never loads torch (importing torch and timm
up front cost each worker ~3 s before its first task)."""
from __future__ import annotations

import os
import sys
from typing import Any

from distributed import WorkerPlugin

from vitsim.engine import WORKER_THREADS


class WorkerSetup(WorkerPlugin):
    name = "vitsim-setup"
    idempotent = True

    def setup(self, worker: Any) -> None:
        from models._timm import guard_on_import

        guard_on_import()
        if "torch" in sys.modules or "numba" in sys.modules:
            from vitsim.pipelines import set_threads

            set_threads(1)
        else:   # both read these when they load
            os.environ.update(WORKER_THREADS)

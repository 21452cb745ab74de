"""What every Dask worker of vitsim does before its first task (vitsim.engine registers it with the cluster, so
local, restarted and remote workers all get it): torch and numba on one thread (a worker is one core's worth of work),
and timm imported through its torchvision guard (models._timm), so unpickling a shipped model never imports
torchvision on its own."""
from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin


class WorkerSetup(WorkerPlugin):
    name = "vitsim-setup"
    idempotent = True

    def setup(self, worker: Any) -> None:
        from models._timm import import_timm
        from vitsim.pipelines import set_threads

        import_timm()
        set_threads(1)

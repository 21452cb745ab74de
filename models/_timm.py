"""The one place vitsim imports timm.

PyPI's torchvision 0.28.0 (the release matching torch 2.13.0) is a CUDA build; beside the CPU torch wheel its compiled
operators are absent, and ``import torchvision`` dies in ``torchvision._meta_registrations`` with
``RuntimeError: operator torchvision::nms does not exist``. timm imports torchvision only for transforms, never for its
C ops, so when (and only when) that exact failure happens we pre-register an empty ``_meta_registrations`` module and
import again. Where torchvision imports cleanly, nothing is patched. Hub access is switched off before timm loads.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Any

_META = "torchvision._meta_registrations"


def _import_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules[_META] = types.ModuleType(_META)
        import torchvision  # noqa: F401


def import_timm() -> Any:
    """Return the ``timm`` module, importing it through the torchvision guard with hubs offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "timm" not in sys.modules:
        _import_torchvision()
    import timm

    return timm


class _GuardOnImport:
    """A ``sys.meta_path`` entry that, the first time anything imports ``timm`` (unpickling a timm model does),
    steps aside and runs the torchvision guard first; it finds no module itself, so the import then proceeds."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "timm":
            sys.meta_path.remove(self)
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            _import_torchvision()
        return None


def guard_on_import() -> None:
    """Arm the guard without importing anything: where a process may or may not need timm (a Dask worker running
    RTL simulations does not), importing it up front would cost seconds for nothing."""
    if "timm" not in sys.modules and "torchvision" not in sys.modules and \
            not any(isinstance(f, _GuardOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _GuardOnImport())


def torchvision_was_patched() -> bool:
    """True when the guard had to stub ``torchvision._meta_registrations`` (for tests and diagnostics)."""
    module = sys.modules.get(_META)
    return module is not None and not hasattr(module, "__file__")

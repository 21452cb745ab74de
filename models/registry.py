"""Model registry: vitsim's own models by name, with timm architectures (random weights) as the fallback.

Pattern from timm's ``register_model``/``list_models``. A registered entry builds the architecture; weights come from a
local checkpoint only (safetensors, or a torch file read with ``weights_only=True``): nothing reaches for a hub.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from models._timm import import_timm
from models.checkpoint import CheckpointError, load_weights


@dataclass(frozen=True)
class ModelEntry:
    """How to build one registered model and what data it expects."""

    name: str
    build: Callable[[], torch.nn.Module]
    dataset: str  # "fmnist" or "imagenet"
    default_checkpoint: Path | None = None
    recipe: dict = field(default_factory=dict)  # training-recipe overrides for this model (models.train.Recipe)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, dataset: str, default_checkpoint: Path | None = None,
                   recipe: dict | None = None) -> Callable:
    """Decorator registering a zero-argument builder under ``name`` (``recipe``: its training-recipe overrides)."""

    def wrap(build: Callable[[], torch.nn.Module]) -> Callable[[], torch.nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, build, dataset, default_checkpoint, dict(recipe or {}))
        return build

    return wrap


def list_models(pattern: str = "*", include_timm: bool = False) -> list[str]:
    """Registered model names matching a glob; with ``include_timm`` also timm's architectures."""
    names = sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
    if include_timm:
        names += [n for n in import_timm().list_models(pattern) if n not in _REGISTRY]
    return names


class UnknownModel(KeyError):
    """A model name that is neither a vitsim model nor a timm architecture (a user error)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; a timm architecture gets an ImageNet entry with random weights."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    timm = import_timm()
    if name not in timm.list_models():
        close = [n for n in list_models(include_timm=True) if name.split("_")[0] in n][:8]
        raise UnknownModel(f"unknown model {name!r}; vitsim models: {list_models()}; similar timm names: {close}")
    return ModelEntry(name, lambda: timm.create_model(name, pretrained=False), "imagenet")


def create_model(name: str, checkpoint: str | Path | None = None, pretrained: bool = True) -> torch.nn.Module:
    """Build ``name`` in eval mode. Weights: ``checkpoint`` if given, else the bundled one (when ``pretrained``), else random."""
    entry = model_entry(name)
    model = entry.build()
    path = Path(checkpoint) if checkpoint is not None else (entry.default_checkpoint if pretrained else None)
    if checkpoint is None and path is not None and not path.exists():
        raise CheckpointError(f"{name}: its checkpoint {path} is not there yet; make it with "
                              f"`vitsim train --model {name}` (or pass --checkpoint FILE)")
    if path is not None:
        load_weights(model, path)
    return model.eval()


# Importing the definitions fills the registry.
from models import deit_fmnist as _deit_fmnist  # noqa: E402,F401
from models import swin_fmnist as _swin_fmnist  # noqa: E402,F401
from models import mobilevit_fmnist as _mobilevit_fmnist  # noqa: E402,F401

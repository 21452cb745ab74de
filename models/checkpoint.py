"""Checkpoints: safetensors weights plus a metadata JSON beside them; torch files only with ``weights_only=True``."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder so nothing is left half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model: torch.nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Save the state dict as safetensors (contiguous fp32 copies) and ``metadata`` as ``<path>.json``."""
    path = Path(path)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    _atomic_write(path, lambda tmp: save_file(state, tmp))
    if metadata is not None:
        text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
        _atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a .safetensors file or a torch file (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise many types for a bad file
        raise CheckpointError(f"{path}: cannot read checkpoint ({err})") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a checkpoint into ``model`` strictly; a mismatch names the offending keys."""
    state = read_state_dict(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches under the same key names
        raise CheckpointError(f"{path}: does not fit the model: {str(err).splitlines()[-1].strip()}") from err
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit the model; missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata JSON saved beside a checkpoint (empty when there is none)."""
    meta = Path(path).with_suffix(".json")
    return json.loads(meta.read_text()) if meta.exists() else {}

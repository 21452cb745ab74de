"""Top-1 evaluation of a float (or fake-quant) torch model on in-memory arrays, with a progress bar."""
from __future__ import annotations

import numpy as np
import torch

from models.progress import progress as show


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Arg-max class of every image (float32 [n, c, h, w])."""
    model.eval()
    out = []
    for start in show(range(0, len(images), batch_size), "eval", "batch", progress):
        out.append(model(torch.from_numpy(images[start:start + batch_size])).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate_arrays(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 256,
                    progress: bool = False) -> float:
    """Top-1 accuracy as a fraction in [0, 1]."""
    if len(labels) == 0:
        raise ValueError("cannot evaluate on zero images")
    return float((predict(model, images, batch_size, progress) == labels).mean())

"""Evaluation and calibration data by name: ``fmnist`` (Debian's Fashion-MNIST), a class-folder path, or ``random``
(seeded N(0, 1) images for architecture, speed and bit-exactness work where no dataset exists; labels are -1)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models import fmnist
from models.fmnist import DatasetError
from models.imagefolder import load_folder


def input_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model takes: from its patch embedding (ViT, DeiT, Swin; our Fashion-MNIST models), else from
    timm's ``pretrained_cfg`` (any other timm architecture)."""
    pe = getattr(model, "patch_embed", None)
    if pe is not None and hasattr(pe, "img_size") and hasattr(pe, "proj"):
        size = pe.img_size if isinstance(pe.img_size, (tuple, list)) else (pe.img_size, pe.img_size)
        return (pe.proj.in_channels, int(size[0]), int(size[1]))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" in cfg:
        c, h, w = cfg["input_size"]
        return (int(c), int(h), int(w))
    raise DatasetError(f"cannot tell the input size of {type(model).__name__}: it has no patch embedding and no "
                       "timm pretrained_cfg")


def random_images(model: torch.nn.Module, n: int, seed: int = 0) -> np.ndarray:
    gen = np.random.default_rng(seed)
    return gen.standard_normal((n, *input_shape(model))).astype(np.float32)


def eval_data(spec: str, model: torch.nn.Module, limit: int | None = None, root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Test images (float32, model-ready) and labels. ``root`` overrides the Fashion-MNIST folder."""
    if spec == "fmnist":
        images, labels = fmnist.load_split("test", root)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return fmnist.normalize(images), labels
    if spec == "random":
        n = 64 if limit is None else limit
        return random_images(model, n, seed=1), np.full(n, -1, dtype=np.int64)
    folder = Path(spec)
    return load_folder(folder / "val" if (folder / "val").is_dir() else folder, model, limit)


def _calibration_pick(count: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(count, size=min(n, count), replace=False))


def calibration_data(spec: str, model: torch.nn.Module, n: int, seed: int = 0, root: str | None = None) -> torch.Tensor:
    """``n`` training images, a seeded random subset (never test images)."""
    if n <= 0:
        raise DatasetError(f"calibration needs at least one image, got {n}")
    if spec == "fmnist":
        images, _ = fmnist.load_split("train", root)
        return torch.from_numpy(fmnist.normalize(images[_calibration_pick(len(images), n, seed)]))
    if spec == "random":
        return torch.from_numpy(random_images(model, n, seed=seed))
    folder = Path(spec)
    train = folder / "train" if (folder / "train").is_dir() else folder
    images, _ = load_folder(train, model)
    return torch.from_numpy(images[_calibration_pick(len(images), n, seed)])


def held_out_data(spec: str, model: torch.nn.Module, n: int, calib: int | Sequence[int], seed: int = 0,
                  root: str | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` labelled training images disjoint from ``calibration_data(spec, model, calib, seed)`` (from each of
    them, if ``calib`` lists several sizes: the seeded subsets are not nested): where searches measure fitness and
    hyper-parameters are tuned (never on test images)."""
    if spec == "fmnist":
        images, labels = fmnist.load_split("train", root)
    elif spec == "random":
        raise DatasetError("a held-out split needs labelled data (fmnist or a class folder), not random images")
    else:
        folder = Path(spec)
        images, labels = load_folder(folder / "train" if (folder / "train").is_dir() else folder, model)
    sizes = [calib] if isinstance(calib, int) else list(calib)
    used = np.concatenate([_calibration_pick(len(images), size, seed) for size in sizes])
    rest = np.setdiff1d(np.arange(len(images)), used)
    if len(rest) == 0:
        raise DatasetError("no training images are left outside the calibration set for a held-out split")
    pick = np.sort(np.random.default_rng(seed + 1).choice(rest, size=min(n, len(rest)), replace=False))
    chosen = fmnist.normalize(images[pick]) if spec == "fmnist" else images[pick]
    return torch.from_numpy(chosen), np.asarray(labels)[pick]

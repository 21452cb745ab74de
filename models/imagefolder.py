"""ImageNet-style folder datasets: ``root/<class name>/<image>``, classes sorted by name, timm's eval transforms.

Used for real pretrained timm models whose weights come from local files; the transform follows the model's
``pretrained_cfg`` (resize, center crop, mean/std) through ``timm.data.resolve_data_config``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models._timm import import_timm

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


class FolderError(RuntimeError):
    """A folder that is missing, empty or holds unreadable images."""


def list_images(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, class indices, class names) of a class-subfolder tree."""
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"image folder not found: {root} (expected {root}/<class>/<image files>)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise FolderError(f"{root}: no class subfolders (expected {root}/<class>/<image files>)")
    paths, labels = [], []
    for index, name in enumerate(classes):
        for p in sorted((root / name).iterdir()):
            if p.suffix.lower() in EXTENSIONS:
                paths.append(p)
                labels.append(index)
    if not paths:
        raise FolderError(f"{root}: class folders hold no images ({sorted(EXTENSIONS)})")
    return paths, labels, classes


def load_folder(root: str | Path, model: torch.nn.Module, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images transformed for ``model`` as float32 [n, 3, h, w] and int64 labels."""
    from PIL import Image, UnidentifiedImageError

    timm = import_timm()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    paths, labels, _ = list_images(root)
    if limit is not None:
        paths, labels = paths[:limit], labels[:limit]
    images = []
    for p in paths:
        try:
            with Image.open(p) as img:
                images.append(transform(img.convert("RGB")).numpy())
        except (UnidentifiedImageError, OSError) as err:
            raise FolderError(f"{p}: unreadable image ({err})") from err
    return np.stack(images).astype(np.float32), np.asarray(labels, dtype=np.int64)

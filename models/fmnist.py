"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (Xiao et al., 2017, arXiv:1708.07747).

The package installs four gzipped IDX files. IDX format (LeCun's MNIST spec): big-endian; images have magic 2051 and
dims (n, 28, 28) with pixel data at byte 16; labels have magic 2049 and dim (n,) with data at byte 8.
The location can be overridden with ``VITSIM_DATA`` or the CLI's ``--data`` flag.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Per-pixel mean/std of the 60 000 training images scaled to [0, 1]; fixed constants so the model input is reproducible.
MEAN = 0.2860
STD = 0.3530
HOW_TO_GET = "install it with `sudo apt-get install dataset-fashion-mnist` (or `make setup`), or point VITSIM_DATA/--data at a folder holding the four *-ubyte.gz files"


class DatasetError(RuntimeError):
    """Missing or malformed dataset files."""


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Folder holding the IDX files: the explicit override, else ``$VITSIM_DATA``, else the Debian location."""
    if override is not None:
        return Path(override)
    env = os.environ.get("VITSIM_DATA")
    return Path(env) if env else DEFAULT_DIR


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    if not path.exists():
        raise DatasetError(f"Fashion-MNIST file not found: {path}; {HOW_TO_GET}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path}: cannot decompress ({err}); the file is corrupted or truncated; {HOW_TO_GET}") from err
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: {len(raw)} bytes is shorter than the IDX header; the file is truncated")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        raise DatasetError(f"{path}: IDX magic {found}, expected {magic}; not a Fashion-MNIST {('label', 'image')[ndim == 3]} file")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DatasetError(f"{path}: header promises {expected} bytes of data for shape {dims}, file holds {len(raw) - header}; the file is truncated or corrupted")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_split(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [n, 28, 28], labels int64 [n])`` for ``split`` in {'train', 'test'}."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = data_dir(root)
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051, 3)
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049, 1)
    if len(images) != len(labels):
        raise DatasetError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    return images, labels.astype(np.int64)


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 [n, 28, 28] -> float32 [n, 1, 28, 28], scaled to [0, 1] then standardised with MEAN/STD."""
    x = images.astype(np.float32)[:, None] / 255.0
    return (x - MEAN) / STD

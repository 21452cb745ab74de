"""Loaders: Fashion-MNIST IDX files (including missing, truncated and corrupted ones) and class folders."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from models import fmnist
from models.imagefolder import FolderError, list_images, load_folder


def write_idx(folder, prefix, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def test_debian_dataset_shapes_and_labels():
    images, labels = fmnist.load_split("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    train, _ = fmnist.load_split("train")
    assert train.shape == (60000, 28, 28)


def test_override_by_argument_and_environment(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path, "t10k", images, np.arange(5))
    got, labels = fmnist.load_split("test", tmp_path)
    assert np.array_equal(got, images) and labels.tolist() == [0, 1, 2, 3, 4]
    monkeypatch.setenv("VITSIM_DATA", str(tmp_path))
    assert np.array_equal(fmnist.load_split("test")[0], images)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(fmnist.DatasetError, match="apt-get install dataset-fashion-mnist"):
        fmnist.load_split("test", tmp_path)


def test_truncated_and_corrupted_files_are_clear_errors(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    write_idx(tmp_path, "t10k", images, np.arange(4))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))  # valid gzip, short data
    with pytest.raises(fmnist.DatasetError, match="truncated"):
        fmnist.load_split("test", tmp_path)
    path.write_bytes(path.read_bytes()[:30])  # broken gzip stream
    with pytest.raises(fmnist.DatasetError, match="corrupted or truncated"):
        fmnist.load_split("test", tmp_path)
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2049, 4, 28, 28) + raw[16:]))
    with pytest.raises(fmnist.DatasetError, match="magic"):
        fmnist.load_split("test", tmp_path)


def test_normalize():
    x = fmnist.normalize(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.shape == (1, 1, 1, 2) and x.dtype == np.float32
    assert np.allclose(x.ravel(), [(0 - fmnist.MEAN) / fmnist.STD, (1 - fmnist.MEAN) / fmnist.STD])


def test_image_folder(tmp_path):
    from PIL import Image

    from models.registry import create_model

    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), colour).save(tmp_path / cls / f"{i}.png")
    paths, labels, classes = list_images(tmp_path)
    assert classes == ["cat", "dog"] and labels == [0, 0, 1, 1] and len(paths) == 4
    net = create_model("deit_tiny_patch16_224", pretrained=False)
    images, labels = load_folder(tmp_path, net)
    assert images.shape == (4, 3, 224, 224) and labels.tolist() == [0, 0, 1, 1]
    assert images[0, 0].mean() > images[2, 0].mean()  # red beats blue in the red channel
    (tmp_path / "dog" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(FolderError, match="bad.png"):
        load_folder(tmp_path, net)
    with pytest.raises(FolderError, match="not found"):
        list_images(tmp_path / "nowhere")


def test_held_out_images_avoid_every_calibration_subset(tmp_path):
    """Tuning scores on held-out training images; one that is also a calibration image inflates the score. The
    seeded subsets of different sizes are not nested, so a held-out split for several sizes must avoid each."""
    from models.data import calibration_data, held_out_data

    count = 300
    images = np.zeros((count, 28, 28), np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(count) % 256, np.arange(count) // 256  # every image unique
    write_idx(tmp_path, "train", images, np.arange(count) % 10)

    lookup = {tuple(row): i for i, row in enumerate(fmnist.normalize(images).reshape(count, -1)[:, :2])}

    def index_of(batch) -> set[int]:
        return {lookup[tuple(row)] for row in batch.numpy().reshape(len(batch), -1)[:, :2]}

    small = index_of(calibration_data("fmnist", None, 40, root=tmp_path))
    large = index_of(calibration_data("fmnist", None, 100, root=tmp_path))
    assert len(small) == 40 and len(large) == 100 and not small <= large  # not nested
    held, labels = held_out_data("fmnist", None, 1000, [40, 100], root=tmp_path)
    chosen = index_of(held)
    assert chosen.isdisjoint(small) and chosen.isdisjoint(large)
    assert chosen == set(range(count)) - small - large  # asked for more than is left: all of the rest
    assert sorted(labels.tolist()) == sorted(i % 10 for i in chosen)
    only_small = index_of(held_out_data("fmnist", None, 1000, 40, root=tmp_path)[0])
    assert only_small == set(range(count)) - small

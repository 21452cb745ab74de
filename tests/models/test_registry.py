"""Registry, checkpoints, the timm import guard, and the bundled model's accuracy."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from models.checkpoint import CheckpointError, load_weights, read_metadata, save_checkpoint
from models.deit_fmnist import CHECKPOINT
from models.evaluate import evaluate_arrays
from models.registry import create_model, list_models, model_entry


def test_registry_lists_and_builds():
    assert "deit_fmnist" in list_models()
    net = create_model("deit_fmnist", pretrained=False)
    assert sum(p.numel() for p in net.parameters()) <= 1_000_000
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(KeyError, match="unknown model"):
        model_entry("no_such_vit")


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "vit_small_patch16_224", "swin_tiny_patch4_window7_224",
                                  "mobilevit_xs", "efficientformer_l1"])
def test_timm_architectures_build_with_random_weights(name):
    net = create_model(name, pretrained=False)
    assert model_entry(name).dataset == "imagenet" and not net.training


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    net = create_model("deit_fmnist", pretrained=False)
    save_checkpoint(net, tmp_path / "m.safetensors", {"seed": 1})
    again = create_model("deit_fmnist", tmp_path / "m.safetensors")
    for (k, a), (_, b) in zip(net.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert read_metadata(tmp_path / "m.safetensors") == {"seed": 1}
    torch.save(net.state_dict(), tmp_path / "m.pth")
    load_weights(create_model("deit_fmnist", pretrained=False), tmp_path / "m.pth")


def test_bad_checkpoints_are_clear_errors(tmp_path):
    net = create_model("deit_fmnist", pretrained=False)
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(net, tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_weights(net, tmp_path / "junk.safetensors")
    save_checkpoint(create_model("deit_tiny_patch16_224", pretrained=False), tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(net, tmp_path / "other.safetensors")


def test_bundled_checkpoint_is_small_and_its_metadata_is_measured(deit_fmnist, fmnist_test):
    assert CHECKPOINT.stat().st_size <= 5 * 2**20
    meta = read_metadata(CHECKPOINT)
    assert {"test_top1", "seed", "epochs", "recipe", "command"} <= set(meta)
    images, labels = fmnist_test
    assert meta["n_test"] == len(labels) == 10000
    assert abs(meta["test_top1"] - evaluate_arrays(deit_fmnist, images, labels)) < 5e-5  # the recorded number is real


def test_bundled_model_accuracy_on_first_2000_test_images(deit_fmnist, fmnist_test):
    images, labels = fmnist_test
    assert evaluate_arrays(deit_fmnist, images[:2000], labels[:2000]) >= 0.88


def test_timm_import_guard_in_a_fresh_interpreter():
    code = ("import sys; from models._timm import import_timm, torchvision_was_patched; t = import_timm(); "
            "import os; assert os.environ['HF_HUB_OFFLINE'] == '1'; "
            "print(t.__name__, torchvision_was_patched())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "timm"
    # Where torchvision's C ops fail to load the guard patches; where they load it must not.
    ok = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0
    assert out[1] == str(not ok)


def test_timm_guard_armed_without_importing_then_applied_on_first_timm_import():
    code = ("import sys; from models._timm import guard_on_import, torchvision_was_patched; guard_on_import(); "
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules; "
            "import timm.models.vision_transformer as vt; print(vt.VisionTransformer.__name__, torchvision_was_patched())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "VisionTransformer"
    ok = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0
    assert out[1] == str(not ok)

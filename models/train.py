"""Seeded training recipe for vitsim's Fashion-MNIST ViTs (``vitsim train``).

Recipe (DeiT-like, scaled down; Touvron et al., 2021): 40 epochs of AdamW (lr 2e-3, weight decay 0.05), batch 128, one linear warm-up
epoch then cosine decay to 1e-5, label smoothing 0.1, augmentation = random crop of the 2-pixel zero-padded image plus
horizontal flip. The test set is never used to choose anything: the last epoch's weights are saved, then evaluated once.
A model's registry entry may override recipe fields; ``recipe_for`` applies them.

Training is resumable: after every epoch the model, optimiser and random-generator states go to
``$VITSIM_CACHE/train/<model>-<recipe hash>.pt`` (default ``~/.cache/vitsim``), and a run with the same model and
recipe continues from the last finished epoch with the same result as an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from models import fmnist
from models.checkpoint import save_checkpoint
from models.evaluate import evaluate_arrays
from models.checkpoint import _atomic_write
from models.registry import create_model, model_entry


@dataclass(frozen=True)
class Recipe:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    pad: int = 2
    seed: int = 0


def recipe_for(model_name: str, **overrides: object) -> Recipe:
    """The default recipe with the model's registered overrides, then ``overrides`` (None values are ignored)."""
    fields = {**model_entry(model_name).recipe, **{k: v for k, v in overrides.items() if v is not None}}
    return Recipe(**fields)


def _state_path(model_name: str, recipe: Recipe) -> Path:
    key = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:12]
    root = Path(os.environ.get("VITSIM_CACHE", Path.home() / ".cache" / "vitsim"))
    return root / "train" / f"{model_name}-{key}.pt"


def augment(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop from a zero-padded image (zero = black pixel, before normalisation) and random horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, 1, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, 1, h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def _lr_at(step: int, steps_per_epoch: int, r: Recipe) -> float:
    warm = r.warmup_epochs * steps_per_epoch
    if step < warm:
        return r.lr * (step + 1) / warm
    progress = (step - warm) / max(1.0, r.epochs * steps_per_epoch - warm)
    return r.min_lr + 0.5 * (r.lr - r.min_lr) * (1 + math.cos(math.pi * progress))


def train(model_name: str, out: Path, recipe: Recipe = Recipe(), data: str | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train ``model_name`` from scratch with ``recipe``; save safetensors + metadata JSON at ``out``; return the metadata."""
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    train_images, train_labels = fmnist.load_split("train", data)
    test_images, test_labels = fmnist.load_split("test", data)
    x_raw = torch.from_numpy(train_images.astype(np.float32)[:, None] / 255.0)
    y = torch.from_numpy(train_labels)
    model = create_model(model_name, pretrained=False).train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    steps_per_epoch = len(x_raw) // recipe.batch_size
    step, start, first_epoch, spent = 0, time.time(), 0, 0.0
    state_path = _state_path(model_name, recipe)
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        first_epoch, step, spent = state["epoch"], state["step"], state["seconds"]
        start -= spent
        log(f"resuming {model_name} from {state_path} after epoch {first_epoch}")
    for epoch in range(first_epoch, recipe.epochs):
        model.train()
        order = torch.randperm(len(x_raw), generator=gen)
        total_loss, correct = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            xb = (augment(x_raw[idx], recipe.pad, gen) - fmnist.MEAN) / fmnist.STD
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, steps_per_epoch, recipe)
            logits = model(xb)
            loss = F.cross_entropy(logits, y[idx], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total_loss += loss.item()
            correct += (logits.argmax(1) == y[idx]).sum().item()
        seen = steps_per_epoch * recipe.batch_size
        log(f"epoch {epoch + 1}/{recipe.epochs} loss {total_loss / steps_per_epoch:.4f} train_top1 {correct / seen:.4f} "
            f"lr {opt.param_groups[0]['lr']:.2e} elapsed {time.time() - start:.0f}s")
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                 "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "step": step, "seconds": time.time() - start}
        _atomic_write(state_path, lambda tmp: torch.save(state, tmp))
    model.eval()
    top1 = evaluate_arrays(model, fmnist.normalize(test_images), test_labels)
    meta = {"model": model_name, "dataset": "fashion-mnist", "test_top1": round(top1, 4), "n_test": int(len(test_labels)),
            "seed": recipe.seed, "epochs": recipe.epochs, "recipe": asdict(recipe),
            "train_seconds": round(time.time() - start, 1), "torch": torch.__version__,
            "command": f"vitsim train --model {model_name} --epochs {recipe.epochs} --seed {recipe.seed} --out {out}"}
    save_checkpoint(model, out, meta)
    state_path.unlink(missing_ok=True)
    log(f"test top1 {top1:.4f}; saved {out}")
    log(json.dumps(meta))
    return meta

"""End-to-end flows behind the CLI: evaluate, quantize (+export, + integer simulation), simulate, with metrics dicts.

Accuracy of a quantized model is the integer simulator's (hwsim); fake-quant accuracy and the top-1 agreement between
the two are reported beside it.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwsim import executor
from hwsim.ir import Program, load, save
from hwsim.ir.serialize import program_digest
from models.data import calibration_data, eval_data, input_shape
from models.evaluate import predict as torch_predict
from models.progress import progress as show
from models.registry import create_model, model_entry
from quant.build import QuantModel, default_map, quantize_model
from quant.methods import get_method
from quant.mixed_precision import MixedPrecisionMap


def set_threads(n: int) -> None:
    """Run torch and numba on ``n`` threads. Both, numba's first: its OpenMP layer shares libgomp with torch, and
    starting it (or a parallel kernel run at numba's own count) sets torch's count to numba's."""
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _top1(pred: np.ndarray, labels: np.ndarray) -> float | None:
    return None if labels.size == 0 or labels.min() < 0 else float((pred == labels).mean())


def default_data(model_name: str) -> str:
    return "fmnist" if model_entry(model_name).dataset == "fmnist" else "random"


def int_predict(program: Program, images: np.ndarray, batch_size: int = 100, progress: bool = False) -> tuple[np.ndarray, dict[str, int], float]:
    """Integer-simulator classes, saturation counts per op, and images per second."""
    preds, saturations = [], {}
    start = time.perf_counter()
    for i in show(range(0, len(images), batch_size), "hwsim", "batch", progress):
        res = executor.run(program, executor.quantize_input(program, images[i:i + batch_size]))
        preds.append(res.logits.reshape(len(res.logits), -1).argmax(1))
        for k, v in res.saturations.items():
            saturations[k] = saturations.get(k, 0) + v
    elapsed = time.perf_counter() - start
    return np.concatenate(preds), saturations, len(images) / max(elapsed, 1e-9)


def fq_predict(qmodel: QuantModel, images: np.ndarray, batch_size: int = 100, progress: bool = False) -> np.ndarray:
    return torch_predict(qmodel, images, batch_size, progress)


def evaluate(model: str, checkpoint: str | None, data: str | None, limit: int | None, root: str | None = None,
             progress: bool = False) -> dict[str, Any]:
    net = create_model(model, checkpoint)
    data = data or default_data(model)
    images, labels = eval_data(data, net, limit, root)
    start = time.perf_counter()
    pred = torch_predict(net, images, progress=progress)
    return {"model": model, "checkpoint": checkpoint, "data": data, "top1": _top1(pred, labels), "n": int(len(labels)),
            "images_per_s": round(len(images) / (time.perf_counter() - start), 1)}


def build_quantized(recipe: dict[str, Any], progress: bool = False,
                    base: Path | None = None) -> tuple[torch.nn.Module, QuantModel]:
    """Float model and its quantized model from a recipe (the same dict export stores, so results are reproducible).
    A QAT recipe names the trained model's file (``qat_state``, relative to ``base``, the program's folder)."""
    net = create_model(recipe["model"], recipe.get("checkpoint"), pretrained=recipe.get("checkpoint") is None and recipe.get("pretrained", True))
    bits_map = MixedPrecisionMap.from_dict(recipe["mp"])
    if "qat_state" in recipe:
        from quant.qat import load_quantized

        qg, metadata = load_quantized((base or Path(".")) / recipe["qat_state"], net, input_shape(net), bits_map)
        return net, QuantModel(qg, recipe["model"], metadata)
    calib = calibration_data(recipe["data"], net, recipe["calib"], recipe["seed"], recipe.get("root"))
    meta = {"recipe": recipe, "model": recipe["model"]}
    q = quantize_model(net, calib, get_method(recipe["method"]), bits_map, name=recipe["model"], metadata=meta, progress=progress)
    return net, q


def make_recipe(model: str, method: str, wbits: int, abits: int, mp: str | None, calib: int, seed: int,
                checkpoint: str | None, data: str | None, root: str | None = None, first_last_8bit: bool = True) -> dict[str, Any]:
    defaults = default_map(wbits, abits, first_last_8bit)
    bits_map = MixedPrecisionMap.load(mp, defaults.global_bits) if mp else defaults
    if mp and first_last_8bit and not bits_map.first_last:
        bits_map.first_last = dict(defaults.first_last)
    recipe = {"model": model, "method": method, "wbits": wbits, "abits": abits, "mp": bits_map.to_dict(), "calib": calib,
              "seed": seed, "data": data or default_data(model), "checkpoint": checkpoint}
    if root:
        recipe["root"] = root
    if checkpoint:
        recipe["checkpoint_sha256"] = _sha256(Path(checkpoint))
    return recipe


def quantize(recipe: dict[str, Any], out: str, limit: int | None = None, simulate: bool = True,
             progress: bool = False) -> dict[str, Any]:
    """Quantize, export to ``out``, and measure fp32, fake-quant and integer top-1 on the test set; ``quantize_s`` is
    the wall time of calibration, the method's scale choice and learning, and the export."""
    start = time.perf_counter()
    net, q = build_quantized(recipe, progress)
    program = q.export()
    quantize_s = time.perf_counter() - start
    save(program, out)
    images, labels = eval_data(recipe["data"], net, limit, recipe.get("root"))
    fp32 = torch_predict(net, images, progress=progress)
    fq = fq_predict(q, images, progress=progress)
    result: dict[str, Any] = {"model": recipe["model"], "method": recipe["method"], "wbits": recipe["wbits"],
                              "abits": recipe["abits"], "calib": recipe["calib"], "out": str(out), "n": int(len(labels)),
                              "fp32_top1": _top1(fp32, labels), "quant_top1": _top1(fq, labels),
                              "fp32_quant_agreement": float((fp32 == fq).mean()), "quantize_s": round(quantize_s, 1)}
    if simulate:
        ints, saturations, ips = int_predict(program, images, progress=progress)
        result.update({"int_top1": _top1(ints, labels), "agreement": float((ints == fq).mean()),
                       "images_per_s": round(ips, 1), "overflows": {k: v for k, v in saturations.items() if v}})
    return result


def simulate(path: str, data: str | None = None, limit: int | None = None, root: str | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Run a program file on the test set with hwsim; rebuild its fake-quant model from the stored recipe for agreement."""
    program = load(path)
    recipe = program.metadata.get("recipe")
    result: dict[str, Any] = {"program": str(path), "model": program.name}
    net = q = None
    if recipe is not None:
        net, q = build_quantized(recipe, progress, Path(path).parent)
        if program_digest(q.export()) != program_digest(program):
            result["warning"] = "the stored recipe no longer reproduces this program; agreement is against the rebuilt model"
    data = data or (recipe or {}).get("data") or "random"
    ref_model = net if net is not None else create_model(program.name, pretrained=False)
    images, labels = eval_data(data, ref_model, limit, root or (recipe or {}).get("root"))
    ints, saturations, ips = int_predict(program, images, progress=progress)
    result.update({"data": data, "n": int(len(labels)), "top1": _top1(ints, labels), "images_per_s": round(ips, 1),
                   "overflows": {k: v for k, v in saturations.items() if v}, "agreement": None})
    if q is not None:
        fq = fq_predict(q, images, progress=progress)
        result.update({"agreement": float((fq == ints).mean()), "quant_top1": _top1(fq, labels)})
    return result


def qat(recipe, out: str, limit: int | None = None, root: str | None = None, progress: bool = False,
        log=print) -> dict[str, Any]:
    """Q-ViT quantization-aware training (quant.qat) of ``recipe`` (a ``QATRecipe``), resumable; exports the program to
    ``out`` and the trained fake-quant model beside it (``<out stem>.qat.safetensors``, which ``simulate`` reads), and
    measures fp32, fake-quant and integer top-1 and their agreement on the test set."""
    from dataclasses import asdict

    from quant.qat import finish, recipe_map, save_quantized, train_qat

    start = time.perf_counter()
    run = train_qat(recipe, root, log, progress)
    student, net = finish(run.student), run.net
    out_path = Path(out)
    state_file = out_path.with_name(out_path.stem + ".qat.safetensors")
    stored = {"model": recipe.model, "method": "qvit", "wbits": recipe.wbits, "abits": recipe.abits,
              "mp": recipe_map(recipe).to_dict(), "calib": recipe.calib,
              "seed": recipe.seed, "data": recipe.data, "checkpoint": recipe.checkpoint, "qat": asdict(recipe),
              "qat_state": state_file.name}
    metadata = {"method": "qvit", "bits": run.bits, "calibration_images": recipe.calib,
                "input_shape": list(input_shape(net)), "recipe": stored, "model": recipe.model,
                "qat_history": run.history, "train_s": round(run.train_s, 1)}
    qmodel = QuantModel(student, recipe.model, metadata)
    program = qmodel.export()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save(program, out_path)
    save_quantized(student, state_file, metadata)
    images, labels = eval_data(recipe.data, net, limit, root)
    fp32 = torch_predict(net, images, progress=progress)
    fq = fq_predict(qmodel, images, progress=progress)
    ints, saturations, ips = int_predict(program, images, progress=progress)
    return {"model": recipe.model, "method": "qvit", "wbits": recipe.wbits, "abits": recipe.abits, "pot": recipe.pot,
            "epochs": recipe.epochs, "out": str(out_path), "qat_state": str(state_file), "n": int(len(labels)),
            "fp32_top1": _top1(fp32, labels), "quant_top1": _top1(fq, labels), "int_top1": _top1(ints, labels),
            "agreement": float((ints == fq).mean()), "held_out_top1": run.history[-1]["held_out_top1"],
            "train_s": round(run.train_s, 1), "total_s": round(time.perf_counter() - start, 1),
            "resumed_from_epoch": run.resumed_from, "history": run.history, "images_per_s": round(ips, 1),
            "overflows": {k: v for k, v in saturations.items() if v}, "recipe": asdict(recipe)}

"""The ``vitsim`` command line: train, eval, quantize, qat, layers, simulate, cost, table, explore, verify, vectors, demo.

Every command prints a readable summary, or with ``--json`` exactly one JSON object on stdout; progress bars go to
stderr. Errors are one clear line on stderr and exit status 2 (bad input) or 1 (a check failed).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

# The PTQ methods (quant.methods.METHODS), listed here so that `vitsim --help` does not import torch;
# tests/vitsim/test_cli.py checks that the two lists agree.
METHOD_NAMES = ["minmax", "ptq4vit", "repq", "p2vit", "mptq", "isvit", "pfcr", "qhyvit"]
# Each method's default calibration set (quant.methods: Method.calibration_images), checked against it by the same test.
METHOD_CALIBRATION = {"minmax": 256, "ptq4vit": 32, "repq": 32, "p2vit": 256, "mptq": 32, "isvit": 1024, "pfcr": 256,
                      "qhyvit": 32}
# `vitsim table`'s default methods: the ViT methods (Q-HyViT is for hybrids: `make table` names it for mobilevit_fmnist)
TABLE_METHODS = METHOD_NAMES[:7]


def _calib(args: argparse.Namespace) -> int:
    return args.calib if args.calib is not None else METHOD_CALIBRATION[args.method]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _emit(result: dict[str, Any], as_json: bool, lines: Callable[[dict[str, Any]], list[str]]) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        print("\n".join(lines(result)))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f} %" if isinstance(value, float) and 0 <= value <= 1 else str(value)


def cmd_train(args: argparse.Namespace) -> int:
    from models.train import recipe_for, train

    out = Path(args.out) if args.out else Path(__file__).resolve().parent.parent / "models" / "checkpoints" / f"{args.model}.safetensors"
    recipe = recipe_for(args.model, epochs=args.epochs, seed=args.seed, batch_size=args.batch_size, lr=args.lr)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    meta = train(args.model, out, recipe, args.data, log=log)
    _emit({**meta, "out": str(out)}, args.json, lambda r: [f"saved {r['out']}: test top-1 {_fmt(r['test_top1'])}"])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vitsim.pipelines import evaluate

    result = evaluate(args.model, args.checkpoint, args.data, args.limit, args.data_root, progress=not args.json)
    _emit(result, args.json, lambda r: [f"{r['model']} on {r['data']}: top-1 {_fmt(r['top1'])} over {r['n']} images "
                                        f"({r['images_per_s']} img/s)"])
    return 0


def _quant_lines(r: dict[str, Any]) -> list[str]:
    lines = [f"{r['model']} {r['method']} W{r['wbits']}A{r['abits']} (calibrated on {r['calib']} training images) -> {r['out']}",
             f"  fp32 top-1        {_fmt(r['fp32_top1'])}",
             f"  fake-quant top-1  {_fmt(r['quant_top1'])}"]
    if "int_top1" in r:
        lines += [f"  integer top-1     {_fmt(r['int_top1'])}   (hwsim, {r['images_per_s']} img/s)",
                  f"  int/fake-quant agreement {_fmt(r['agreement'])} over {r['n']} images"]
        if r["overflows"]:
            lines.append(f"  saturated values per op: {r['overflows']}")
    return lines


def cmd_quantize(args: argparse.Namespace) -> int:
    from vitsim.pipelines import make_recipe, quantize

    recipe = make_recipe(args.model, args.method, args.wbits, args.abits, args.mp, _calib(args), args.seed,
                         args.checkpoint, args.data, args.data_root, not args.quantize_first_last)
    result = quantize(recipe, args.out, args.limit, simulate=not args.no_simulate, progress=not args.json)
    _emit(result, args.json, _quant_lines)
    return 0


def cmd_qat(args: argparse.Namespace) -> int:
    from quant.parts import QuantError
    from quant.qat import QATRecipe, default_epochs, default_quant_lr
    from vitsim.pipelines import qat

    for flag in ("wbits", "abits"):
        if not 2 <= getattr(args, flag) <= 8:
            raise QuantError(f"--{flag} takes 2..8, got {getattr(args, flag)}")
    given = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "quant_lr", "train_images", "held_out")
             if getattr(args, k) is not None}
    given.setdefault("epochs", default_epochs(args.model))
    given.setdefault("quant_lr", default_quant_lr(args.wbits, args.abits))
    recipe = QATRecipe(args.model, args.wbits, args.abits, pot=args.pot, irm=not args.no_irm, dgd=not args.no_dgd,
                       seed=args.seed, checkpoint=args.checkpoint, **given)
    out = args.out or f"out/qat/{args.model}_qvit_w{args.wbits}a{args.abits}{'_pot' if args.pot else ''}.vitp"
    log = (lambda s: print(s, file=sys.stderr, flush=True))
    r = qat(recipe, out, args.limit, args.data_root, progress=not args.json, log=log)
    if args.results:
        with open(args.results, "a") as f:
            f.write(json.dumps({k: v for k, v in r.items() if k != "history"}, sort_keys=True) + "\n")
    _emit(r, args.json, lambda r: [
        f"{r['model']} Q-ViT QAT W{r['wbits']}A{r['abits']}{' (power-of-two scales)' if r['pot'] else ''}, "
        f"{r['epochs']} epochs in {r['train_s'] / 60:.1f} min -> {r['out']} (+ {r['qat_state']})",
        f"  fp32 top-1        {_fmt(r['fp32_top1'])}",
        f"  fake-quant top-1  {_fmt(r['quant_top1'])}   (held-out training images: {_fmt(r['held_out_top1'])})",
        f"  integer top-1     {_fmt(r['int_top1'])}   (hwsim, {r['images_per_s']} img/s)",
        f"  int/fake-quant agreement {_fmt(r['agreement'])} over {r['n']} images"]
        + ([f"  saturated values per op: {r['overflows']}"] if r["overflows"] else []))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from vitsim.pipelines import simulate

    r = simulate(args.program, args.data, args.limit, args.data_root, progress=not args.json)
    _emit(r, args.json, lambda r: [f"{r['program']} ({r['model']}) on {r['data']}: integer top-1 {_fmt(r['top1'])} over "
                                   f"{r['n']} images, agreement with fake-quant {_fmt(r['agreement'])}, "
                                   f"{r['images_per_s']} img/s", f"  saturated values per op: {r['overflows'] or 'none'}"]
          + ([f"  warning: {r['warning']}"] if "warning" in r else []))
    return 0


def _cost_lines(r: dict[str, Any], show_all: bool) -> list[str]:
    t = r["totals"]
    lines = [f"{r['program']} on {r['hw']}",
             f"{'op':<34} {'kind':<9} {'unit':<9} {'mode':<7} {'cycles':>9} {'stall':>7} {'DRAM KB':>8} {'energy nJ':>10}"]
    for o in r["ops"]:
        if show_all or o["unit"] not in ("fused", "layout"):
            dram = (o["dram_read_bytes"] + o["dram_write_bytes"]) / 1024
            lines.append(f"{o['name'][:34]:<34} {o['kind']:<9} {o['unit']:<9} {o['mode']:<7} {o['cycles']:>9} "
                         f"{o['stall_cycles']:>7} {dram:>8.1f} {o['energy_total_pj'] / 1e3:>10.2f}")
    total_pj = sum(t["energy_pj"].values()) or 1.0
    lines += [f"total: {t['cycles']} cycles ({t['latency_ms']:.3f} ms at {t['clock_mhz']:g} MHz), {t['stall_cycles']} stall "
              f"cycles, DRAM {t['dram_bytes'] / 1024:.1f} KB, {t['macs'] / 1e6:.2f} M MACs, energy {t['energy_uj']:.2f} uJ",
              f"area:    {t['area_mm2']:.3f} mm^2 of logic (" + ", ".join(f"{k} {v / 1e6:.3f}" for k, v in t["area_um2"].items()
                                                                 if k != "total") + "; SRAM not included)",
              "energy:  " + ", ".join(f"{k} {v / 1e6:.2f} uJ ({100 * v / total_pj:.0f} %)" for k, v in t["energy_pj"].items()),
              "cycles:  " + ", ".join(f"{k} {v} ({100 * v / max(t['cycles'], 1):.0f} %)"
                                      for k, v in t["cycles_by_unit"].items() if v)]
    return lines


def cmd_layers(args: argparse.Namespace) -> int:
    from models.data import input_shape
    from models.registry import create_model
    from quant.graph.capture import capture
    from quant.sites import gemm_layers

    net = create_model(args.model, args.checkpoint, pretrained=args.checkpoint is None)
    layers = gemm_layers(capture(net, input_shape(net)))
    _emit({"model": args.model, "layers": [{"name": n, "op_type": t} for n, t in layers.items()]}, args.json,
          lambda r: [f"{x['name']:<40} {x['op_type']}" for x in r["layers"]])
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from hwsim.arch import load_hardware
    from hwsim.cost import cost
    from hwsim.ir import load

    program = load(args.program)
    result = cost(program, load_hardware(args.hw, args.set)).to_json()
    result["program"] = args.program
    _emit(result, args.json, lambda r: _cost_lines(r, args.all))
    return 0


def _explore_lines(r: dict[str, Any]) -> list[str]:
    lines = [f"{r['model']} {r['method']}: {r['configurations']} points on {r['n']} test images in {r['seconds']} s",
             f"{'config':<22} {'hardware':<10} {'top-1':>8} {'energy uJ':>10} {'latency ms':>11}  Pareto (energy)"]
    for p in sorted(r["points"], key=lambda p: (p["hw"], p["energy_uj"])):
        lines.append(f"{p['config']:<22} {p['hw']:<10} {100 * p['top1']:>7.2f}% {p['energy_uj']:>10.3f} {p['latency_ms']:>11.4f}"
                     f"  {'*' if p['pareto_energy'] else ''}")
    for s in r["searches"]:
        lines.append(f"{s['search']} search on {s['hw']}: {s['budget']} -> {s['budget_value']:.4g}; map {s['map']}")
    for e in (r["nsga"] or {}).get("per_hw", []):
        line = f"NSGA-II on {e['hw']}: hypervolume {e['hypervolume']:.4g} ({r['nsga']['trials']} evaluations)"
        if "greedy_front" in e:
            line += (f"; Greedy MP {e['greedy_hypervolume']:.4g} ({e['greedy_evaluations']} evaluations); from "
                     f"{e['shared_range_uj'][0]:.4g} uJ up NSGA-II {e['shared_hypervolume']:.4g} vs greedy "
                     f"{e['greedy_shared_hypervolume']:.4g}, {100 * e['greedy_points_covered']:.0f} % of greedy's front "
                     f"matched or beaten; better: {e['better']} (a match within {e['hypervolume_resolution']:.3g})")
        lines.append(line)
    for f in r["failures"]:
        lines.append(f"FAILED {f['config']}: {f['error'].splitlines()[0]}")
    lines.append(f"report: {r['report']}  (points: {r['csv']})")
    return lines


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None,
                   help="local Dask worker processes (default: one per core; 0: run in this process without Dask)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="use a running Dask cluster (e.g. tcp://10.0.0.5:8786) instead of a local one")
    p.add_argument("--retry-failed", action="store_true", help="run again the tasks recorded as failed")


def cmd_explore(args: argparse.Namespace) -> int:
    from vitsim.explore import explore

    r = explore(args.model, args.method, args.wbits, args.abits, args.hw, args.out, args.mp_search, args.budget,
                args.limit, _calib(args), args.held_out, args.seed, args.data, progress=not args.json,
                hw_overrides=args.set, objective=args.fitness, workers=args.workers, scheduler=args.scheduler,
                retry_failed=args.retry_failed, optuna=args.optuna, trials=args.trials, population=args.population,
                widths=args.widths)
    _emit(r, args.json, _explore_lines)
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from vitsim.table import DEFAULT_BITS, build_table, markdown, write_readme

    methods = args.methods or TABLE_METHODS
    if args.qat:  # Q-ViT's rows beside the best PTQ method of each (model, bits): the PTQ rows are measured if missing
        from vitsim.table import qat_markdown, read_rows

        qat_rows = read_rows(args.qat)
        rows = []
        for q in qat_rows:
            rows += build_table([q["model"]], methods, [f"W{q['wbits']}A{q['abits']}"], args.out, args.limit,
                                fresh=args.fresh, progress=not args.json, results_file=args.results,
                                workers=args.workers, scheduler=args.scheduler)
        table = qat_markdown(rows, qat_rows)
    else:
        rows = build_table(args.models, methods, args.bits or list(DEFAULT_BITS), args.out, args.limit,
                           fresh=args.fresh, progress=not args.json, results_file=args.results,
                           workers=args.workers, scheduler=args.scheduler)
        table = markdown(rows)
    Path(args.out, "table.md").write_text(table)
    failed = [r for r in rows if "error" in r]
    if args.readme and failed:
        print(f"vitsim table: {len(failed)} rows failed; {args.readme} left as it was", file=sys.stderr)
    elif args.readme:
        command = "vitsim table " + " ".join(sys.argv[2:])
        write_readme(args.readme, table, command.strip(), args.section)
    _emit({"rows": rows, "failed": len(failed), "table": str(Path(args.out, "table.md")), "readme": args.readme},
          args.json, lambda r: [table.rstrip(), f"table: {r['table']}" + (f" (and {r['readme']})" if r["readme"] else "")])
    return 1 if failed else 0


def _array(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"array must look like 8x8, got {text!r}") from err
    if rows < 1 or cols < 1 or rows > 64 or cols > 64:
        raise argparse.ArgumentTypeError(f"array {text} outside 1x1..64x64")
    return rows, cols


def _mismatch_text(first: dict | None) -> str:
    """The first mismatch in a line: where, the RTL's and hwsim's values (the operands that fed it are in --json)."""
    if not first or "index" not in first or "tile" not in first:
        return f"first mismatch {first}"
    i, j = first["index"]
    return (f"first mismatch at output ({i}, {j}), tile {tuple(first['tile'])}: RTL out {first['rtl_out']} acc "
            f"{first['rtl_acc']}, hwsim out {first['hwsim_out']} acc {first['hwsim_acc']} (bias {first['bias']}, "
            f"shift {first['shift']}; its A row and B row: --json)")


def _param(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    try:
        number = int(value, 0)
    except ValueError:
        number = None
    if not name or number is None:
        raise argparse.ArgumentTypeError(f"a parameter looks like NAME=INTEGER, got {text!r}")
    return name, number


def cmd_verify(args: argparse.Namespace) -> int:
    from rtl.runner import UserDut
    from vitsim.verify import VerifyError, verify

    dut = None
    if args.rtl:
        if not args.top:
            raise VerifyError("--rtl needs --top: the top module of your GEMM engine")
        dut = UserDut(tuple(Path(f) for f in args.rtl), args.top, dict(args.param))
    r = verify(args.program, args.layer, args.block, args.sim, *args.array, waves=args.waves, workers=args.workers,
               scheduler=args.scheduler, dut=dut, reference_schedule=not args.own_schedule, directed=args.directed)
    if args.report:
        from vitsim.verify_report import write_verify_report

        write_verify_report(r, Path(args.report))
    if args.json:
        print(json.dumps(r, sort_keys=True))
    else:
        print(f"{r['program']}: block {r['block']} on a {r['array']} array ({r['sim']})")
        for x in r["layers"]:
            status = "bit-exact" if x["bit_exact"] else "MISMATCH"
            energy = "       n/a" if x["energy_pj"] is None else f"{x['energy_pj'] / 1e3:7.1f} nJ"
            print(f"  {x['layer']:<32} {status:<10} cycles rtl {x['rtl_cycles']:>8} model {x['model_cycles']:>8}  "
                  f"{energy}  {x['wall_s']:6.2f} s")
        print(f"  {r['total_cycles']} cycles simulated at {r['simulated_cycles_per_s']} cycles/s")
        cov = r["coverage"]
        if cov:
            missed = f"; missed: {', '.join(cov['missed'][:8])}{' ...' if len(cov['missed']) > 8 else ''}" \
                if cov["missed"] else ""
            print(f"  coverage {cov['hit']}/{cov['bins']} bins ({cov['percent']:.1f} %){missed}")
            if cov["directed_only"]:
                print(f"  hit by directed jobs only: {', '.join(cov['directed_only'])}")
        if args.report:
            print(f"  report: {args.report}")
    if not (r["all_bit_exact"] and r["cycles_equal"] is not False):
        for x in r["layers"]:
            if not x["bit_exact"]:
                print(f"vitsim verify: {x['layer']} differs from hwsim; {_mismatch_text(x['first_mismatch'])}",
                      file=sys.stderr)
        return 1
    return 0


def cmd_vectors(args: argparse.Namespace) -> int:
    from vitsim.vectors import export_vectors

    m = export_vectors(args.program, args.out, args.layer, args.block, args.images, args.format,
                       progress=not args.json)
    if args.json:
        print(json.dumps(m, sort_keys=True))
    else:
        files = sum(len(t["files"]) for op in m["ops"] for t in op["tensors"])
        print(f"{args.out}: {len(m['ops'])} ops of block {m['block']}, {files} files on {m['images']} image(s) "
              f"({m['image_source']}); manifest {Path(args.out) / 'manifest.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vitsim.demo import run_demo

    result = run_demo(args.out_dir, args.limit, progress=not args.json)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="vitsim", description=__doc__.splitlines()[0], formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)

    def data_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", default=None, help="fmnist, random, or an image folder (class subfolders); default: the model's")
        p.add_argument("--data-root", default=None, help="folder of the Fashion-MNIST IDX files (else $VITSIM_DATA, else Debian's)")
        p.add_argument("--limit", type=_positive, default=None, help="evaluate on the first N test images only")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("train", help="train a vitsim model from scratch (seeded recipe)", formatter_class=fmt)
    p.add_argument("--model", default="deit_fmnist")
    p.add_argument("--epochs", type=_positive, default=None, help="epochs (default: the model's recipe, models/train.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive, default=None, help="default: the recipe's (128)")
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's (2e-3)")
    p.add_argument("--out", default=None, help="checkpoint path (default: the bundled models/checkpoints/<model>.safetensors)")
    p.add_argument("--data", default=None, help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="float top-1 of a model", formatter_class=fmt)
    p.add_argument("--model", default="deit_fmnist")
    p.add_argument("--checkpoint", default=None, help="local weights (.safetensors, or a torch file read with weights_only)")
    data_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("quantize", help="post-training quantization and export of the integer program", formatter_class=fmt)
    p.add_argument("--model", default="deit_fmnist")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--method", choices=METHOD_NAMES, default="p2vit")
    p.add_argument("--wbits", type=int, default=8, help="weight bits (2..8)")
    p.add_argument("--abits", type=int, default=8, help="activation bits (2..8)")
    p.add_argument("--mp", default=None, help="mixed-precision map (YAML; see quant/mixed_precision.py)")
    p.add_argument("--calib", type=_positive, default=None,
                   help="calibration images from the training set (default: the method's, "
                        + ", ".join(f"{k} {v}" for k, v in METHOD_CALIBRATION.items()) + ")")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subset")
    p.add_argument("--quantize-first-last", action="store_true", help="also quantize patch embedding and head to W/A bits (default keeps them at 8)")
    p.add_argument("--no-simulate", action="store_true", help="skip the integer simulation")
    p.add_argument("--out", required=True, help="program file to write")
    data_flags(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("qat", help="Q-ViT quantization-aware training (LSQ+, IRM, DGD), exported as an integer program",
                       formatter_class=fmt)
    p.add_argument("--model", default="deit_fmnist")
    p.add_argument("--checkpoint", default=None, help="the float model's weights (default: the bundled checkpoint)")
    p.add_argument("--wbits", type=int, required=True, help="weight bits (2..8)")
    p.add_argument("--abits", type=int, required=True, help="activation bits (2..8)")
    p.add_argument("--epochs", type=_positive, default=None, help="default: the bundled recipe's (quant/qat.py: 4, swin_fmnist 2)")
    p.add_argument("--pot", action="store_true", help="power-of-two scales (shift-only requantization)")
    p.add_argument("--batch-size", type=_positive, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate of the weights")
    p.add_argument("--quant-lr", type=float, default=None, help="learning rate of the scales, zero points, rectifiers (default: the recipe's, 2e-3; 5e-3 at W4A4)")
    p.add_argument("--train-images", type=_positive, default=None, help="training images per epoch (default: all)")
    p.add_argument("--held-out", type=_positive, default=None, help="training images kept out for tuning (5000)")
    p.add_argument("--no-irm", action="store_true", help="ablation: no information rectification")
    p.add_argument("--no-dgd", action="store_true", help="ablation: logit distillation only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="program file (default out/qat/<model>_qvit_w<W>a<A>[_pot].vitp)")
    p.add_argument("--results", default=None, help="append the result (one JSON line) to this file")
    p.add_argument("--data-root", default=None, help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--limit", type=_positive, default=None, help="evaluate on the first N test images only")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_qat)

    p = sub.add_parser("layers", help="the GEMM layers a mixed-precision map can name (module paths, op types)",
                       formatter_class=fmt)
    p.add_argument("--model", default="deit_fmnist")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("simulate", help="run an integer program with hwsim (the golden model)", formatter_class=fmt)
    p.add_argument("program")
    data_flags(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("cost", help="price an integer program on an accelerator: cycles, DRAM traffic, energy per op",
                       formatter_class=fmt)
    p.add_argument("program")
    p.add_argument("--hw", default=None, help="hardware preset (edge-8x8, 16x16, 32x32) or YAML file (default 16x16)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hardware field, e.g. --set array.rows=8 --set memory.act_kb=0 (repeatable)")
    p.add_argument("--all", action="store_true", help="also list fused requants and layout ops (which cost nothing)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("table", help="every PTQ method x model x bit-width: integer and fake-quant top-1 (README table)",
                       formatter_class=fmt)
    p.add_argument("--models", nargs="+", default=["deit_fmnist", "swin_fmnist"])
    p.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=None,
                   help=f"default: {' '.join(TABLE_METHODS)}")
    p.add_argument("--bits", nargs="+", default=None, help="W/A settings (default: W3A3 W4A4 W6A6 W4A8)")
    p.add_argument("--limit", type=_positive, default=None, help="test images (default: all 10 000)")
    p.add_argument("--out", default="out/table", help="folder: table.md, programs/ and (default) results.jsonl")
    p.add_argument("--results", default=None,
                   help="the resumable JSON-lines rows (default: OUT/results.jsonl; make table keeps them in bench/results/)")
    p.add_argument("--readme", default=None, help="also replace the marked table section of this file (README.md)")
    p.add_argument("--section", default="",
                   help="which marked section: <!-- vitsim table SECTION: begin --> (default: the unnamed one)")
    p.add_argument("--fresh", action="store_true", help="recompute rows already in results.jsonl")
    p.add_argument("--qat", default=None, metavar="FILE",
                   help="instead: the Q-ViT rows of FILE (vitsim qat --results) beside the best PTQ method of each")
    p.add_argument("--workers", type=int, default=0,
                   help="rows measured on this many local Dask worker processes (default 0: in this process)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="measure rows on a running Dask cluster")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("explore", help="bit-widths x hardware: integer accuracy and cost, Pareto plots, HTML report",
                       formatter_class=fmt)
    p.add_argument("--model", default="deit_fmnist")
    p.add_argument("--method", choices=METHOD_NAMES, default="p2vit")
    p.add_argument("--wbits", type=int, nargs="+", default=[3, 4, 5, 6, 8], help="uniform weight widths of the grid")
    p.add_argument("--abits", type=int, nargs="+", default=[4, 5, 6, 8], help="uniform activation widths of the grid")
    p.add_argument("--hw", nargs="+", default=["edge-8x8", "16x16", "32x32"], help="hardware presets or YAML files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of every --hw")
    p.add_argument("--mp-search", choices=["greedy", "c2f"], default=None,
                   help="also search a mixed-precision map per hardware (needs --budget)")
    p.add_argument("--budget", default=None, help="energy=UJ, latency=MS or bits=AVG; a value like W4A4 means that "
                                                  "uniform configuration's figure on each hardware")
    p.add_argument("--limit", type=_positive, default=2000, help="test images for accuracy (a fixed subset)")
    p.add_argument("--calib", type=_positive, default=None, help="calibration images (training set; default: the method's)")
    p.add_argument("--held-out", type=_positive, default=512, help="held-out training images for search fitness")
    p.add_argument("--fitness", choices=["kl", "ce"], default="kl",
                   help="search objective on the held-out images: KL of the integer model's class probabilities from "
                        "the float model's, or cross-entropy against the labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="fmnist or a class-folder dataset (default: the model's)")
    p.add_argument("--out", required=True, help="output folder (points.csv, plots, report.html, maps, results.sqlite: "
                                                "the same command again resumes from it)")
    p.add_argument("--widths", type=int, nargs="+", default=None,
                   help="widths the searches may give a layer (default: 2 3 4 5 6 8)")
    p.add_argument("--optuna", action="store_true",
                   help="also an NSGA-II study (Optuna) over per-layer bits x --hw: objectives held-out top-1, energy, "
                        "latency; its front in the report beside the greedy search's")
    p.add_argument("--trials", type=_positive, default=None,
                   help="NSGA-II held-out evaluations (default: as many as --mp-search greedy used, else 200)")
    p.add_argument("--population", type=_positive, default=24, help="NSGA-II population per generation")
    _engine_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("verify", help="check GEMM layers on the RTL against hwsim (bit-exact, equal cycles)",
                       formatter_class=fmt)
    p.add_argument("program")
    p.add_argument("--layer", default="all",
                   help="qkv, matmul_qk, matmul_av, proj, fc1, fc2, softmax, norm1, norm2, gelu, convs (a hybrid's "
                        "bridge block: its convolutions) or all (in a hybrid: the whole bridge block's GEMMs)")
    p.add_argument("--block", type=int, default=0, help="transformer block index")
    p.add_argument("--sim", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--array", type=_array, default=(8, 8), help="PE array RxC")
    p.add_argument("--waves", action="store_true", help="keep the run folder and dump waveforms")
    p.add_argument("--workers", type=int, default=0,
                   help="run each GEMM job and unit as a task on this many local Dask worker processes (default 0: "
                        "every GEMM in one simulation in this process)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run the tasks on a running Dask cluster")
    p.add_argument("--rtl", nargs="+", metavar="FILE", help="your own GEMM engine's Verilog in place of rtl/src's "
                   "(it keeps gemm_engine's port protocol: docs/rtl_protocol.md); GEMM layers only")
    p.add_argument("--top", help="the top module of --rtl")
    p.add_argument("--param", action="append", default=[], type=_param, metavar="NAME=VALUE",
                   help="a parameter of --top beyond R, C and ADDR_W (repeatable)")
    p.add_argument("--own-schedule", action="store_true",
                   help="--rtl keeps its own schedule: report its cycles, do not compare them with the model's")
    p.add_argument("--directed", action="store_true",
                   help="add the directed GEMM jobs that fill the coverage bins real layers miss (rtl/directed.py)")
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report (layers, coverage)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("vectors", help="golden vectors of a block's ops (inputs, constants, outputs) for any testbench",
                       formatter_class=fmt)
    p.add_argument("program")
    p.add_argument("--layer", default="all",
                   help="one op of the block by name (attn.qkv, qkv, norm1, matmul_qk, ...) or all")
    p.add_argument("--block", type=int, default=0, help="transformer block index")
    p.add_argument("--images", type=_positive, default=1, help="test images (the program's dataset, first N)")
    p.add_argument("--out", required=True, help="output folder (manifest.json and one folder per op)")
    p.add_argument("--format", choices=["hex", "npy", "both"], default="both")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(func=cmd_vectors)

    p = sub.add_parser("demo", help="end-to-end flow on the bundled model", formatter_class=fmt)
    p.add_argument("--out-dir", default="out/demo")
    p.add_argument("--limit", type=_positive, default=2000, help="test images per evaluation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `vitsim cost ... | head` ends quietly, as Unix tools do
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    from hwsim.arch import ConfigError
    from hwsim.cost.pricing import CostError
    from hwsim.executor import InputMismatch
    from hwsim.ir import ProgramError
    from models.checkpoint import CheckpointError
    from models.fmnist import DatasetError
    from models.imagefolder import FolderError
    from models.registry import UnknownModel
    from quant.parts import QuantError
    from rtl.layers import RtlUnsupported
    from rtl.runner import SimulatorMissing
    from quant.search.greedy import SearchError
    from vitsim.vectors import VectorsError
    from vitsim.verify import VerifyError

    user_errors = (ProgramError, CheckpointError, DatasetError, FolderError, QuantError, UnknownModel, ConfigError,
                   InputMismatch, RtlUnsupported, VerifyError, VectorsError, SimulatorMissing, CostError,
                   SearchError, FileNotFoundError)

    try:
        return args.func(args)
    except user_errors as err:  # only validated user errors exit 2; anything else is a bug and keeps its traceback
        print(f"vitsim {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

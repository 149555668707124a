"""The longer ``pxprune`` sub-commands: run and demo; study commands register here too."""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import replace
from pathlib import Path

from ..data import DATASETS
from ..experiments.checks import log_threads, show_progress
from ..experiments.folder import left_as_found_on_failure
from ..experiments.run import DENSE, RunConfig, run_experiment
from ..schedule import parse_sparsity
from ..training.recipes import RECIPES

# The demo's CPU-sized protocol (DESIGN §3 "small"), cut to finish in a few minutes on 2 cores.
DEMO = RunConfig(model="resnet20", dataset="cifar10", method="px", sparsity=0.982, seed=0,
                 recipe="cpu_small", epochs=3, train_per_class=300, test_per_class=100)


def _run_args(p: argparse.ArgumentParser, common) -> None:
    common(p)
    p.add_argument("--dataset", default="cifar10",
                   help=f"dataset name ({', '.join(DATASETS)}) or a .pt/.npz file of "
                        f"images and labels (then give --test-dataset or --holdout)")
    p.add_argument("--test-dataset", default=None,
                   help="a .pt/.npz file to test on (for a --dataset file)")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="test on this fraction of a --dataset file, held out per class with "
                        "--seed and never trained on (e.g. 0.2)")
    p.add_argument("--recipe", default=None,
                   help=f"training preset: {', '.join(RECIPES)} (default: cifar10_resnet20, "
                        f"or cpu_small on CPU)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    p.add_argument("--lr", type=float,
                   help="peak learning rate (default: the recipe's; the schedule scales it)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--schedule", choices=("multistep", "cosine", "onecycle", "constant"))
    p.add_argument("--train-per-class", type=int, help="use the first N training images per class")
    p.add_argument("--test-per-class", type=int, help="use the first N test images per class")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="training precision (default auto: CUDA AMP; CPU bf16 autocast where "
                        "the processor has native bf16, else fp32)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A RunConfig from parsed ``run``/``sweep`` arguments."""
    sparsity = 0.0 if args.method == DENSE else parse_sparsity(args.sparsity)
    recipe = args.recipe or ("cifar10_resnet20" if args.device != "cpu" else "cpu_small")
    return RunConfig(
        model=args.model, dataset=args.dataset, method=args.method, sparsity=sparsity,
        seed=args.seed, rounds=args.rounds, scope=args.scope, per_class=args.per_class,
        recipe=recipe, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        schedule=args.schedule, train_per_class=args.train_per_class,
        test_per_class=args.test_per_class, weights=args.weights, norm=args.norm,
        test_dataset=getattr(args, "test_dataset", None),
        holdout=float(getattr(args, "holdout", 0.0) or 0.0),
        # a sweep measures layer collapse: its cells keep disconnected masks (flagged)
        allow_disconnected=bool(getattr(args, "allow_disconnected", False))
        or getattr(args, "command", None) == "sweep",
        precision=getattr(args, "precision", None),
    )


def cmd_run(args: argparse.Namespace) -> int:
    from ..training.distributed import cleanup, init_distributed

    info = init_distributed(device=args.device)  # torchrun: one process per device
    cfg = config_from_args(args)
    if info.rank == 0:
        log_threads(str(info.device), print)
    try:
        with left_as_found_on_failure(args.out):  # a failed start leaves no config behind
            summary = run_experiment(cfg, args.out, device=str(info.device),
                                     progress=show_progress(args) and info.rank == 0)
    finally:
        cleanup()
    if info.rank == 0:
        keys = ("final_test_acc", "best_test_acc", "density", "collapsed_layers")
        print(json.dumps({k: summary.get(k) for k in keys}, indent=2))
    return 0


def _describe(name: str, s: dict) -> str:
    flops = s.get("flops") or {}
    macs = flops.get("density_macs")
    macs_text = f"{macs:.2%}" if macs is not None else "n/a"
    collapsed = len(s.get("collapsed_layers") or [])
    return (f"{name:<22} test acc {s['final_test_acc'] or 0:5.1f} %   density "
            f"{s['density']:.4f}   MACs kept {macs_text}   collapsed layers {collapsed}")


DEMO_METHODS = ("px", "px[variant=bound]", "random")  # the default, the bound, a floor


def cmd_demo(args: argparse.Namespace) -> int:
    """PX at 98.2 % (the default, the authors' 2024 scoring; then DESIGN §3.2's bound variant)
    vs a random mask, same short CPU recipe."""
    from ..methods.spec import folder_name

    out = Path(args.out)
    device = args.device
    log_threads(device, print)
    results = {}
    for method in DEMO_METHODS:
        cfg = replace(DEMO, method=method, dataset=args.dataset,
                      test_dataset=args.test_dataset, holdout=args.holdout)
        folder = out / folder_name(method)
        print(f"== {method}: prune ResNet-20 to 98.2 % sparsity on {cfg.dataset}, train "
              f"{cfg.epochs} epochs on {cfg.train_per_class} images/class ==")
        results[method] = run_experiment(cfg, folder, device=device,
                                         progress=show_progress(args))
        table = folder / "layers.txt"
        print(table.read_text() if table.exists() else "")
    print("\n== demo result (CIFAR-10 images, short CPU protocol: compare methods, not to the "
          "paper) ==")
    for method, s in results.items():
        print(_describe(method, s))
    return 0


# Modules that add their own sub-command with ``add_command(sub, common_prune_args)``.
STUDY_COMMAND_MODULES = ("sweep_command", "ntk_study", "transfer_command")


def add_commands(sub, common) -> None:
    """Register run and demo (and the study commands) on the top-level sub-parser."""
    p = sub.add_parser("run", help="prune + train + evaluate into a resumable run folder")
    _run_args(p, common)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="PX (the default, then its bound variant) vs random at "
                                    "98.2 %% on CIFAR-10, short CPU training")
    p.add_argument("--dataset", default="cifar10",
                   help="cifar10 (default) or a .pt/.npz file (then --test-dataset or --holdout)")
    p.add_argument("--test-dataset", default=None, help="a .pt/.npz file to test on")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="test on this fraction of a --dataset file, held out per class")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    for name in STUDY_COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:  # a study module not written yet
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        if hasattr(module, "add_command"):
            module.add_command(sub, common)

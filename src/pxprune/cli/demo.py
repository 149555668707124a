"""``pxprune demo``: the default PX, its bound variant and random at 98.2 %, short CPU
training."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ..experiments.checks import log_threads
from ..experiments.config import RunConfig
from ..experiments.run import run_experiment
from ..methods.spec import folder_name
from .common import show_progress

# The demo's CPU-sized protocol (recipe cpu_small), cut to finish in a few minutes on 2 cores.
DEMO = RunConfig(model="resnet20", dataset="cifar10", method="px", sparsity=0.982, seed=0,
                 recipe="cpu_small", epochs=3, train_per_class=300, test_per_class=100)


def _describe(name: str, s: dict) -> str:
    flops = s.get("flops") or {}
    macs = flops.get("density_macs")
    macs_text = f"{macs:.2%}" if macs is not None else "n/a"
    collapsed = len(s.get("collapsed_layers") or [])
    return (f"{name:<22} test acc {s['final_test_acc'] or 0:5.1f} %   density "
            f"{s['density']:.4f}   MACs kept {macs_text}   collapsed layers {collapsed}")


DEMO_METHODS = ("px", "px[variant=bound]", "random")  # the default, the bound, a floor


def cmd_demo(args: argparse.Namespace) -> int:
    """PX at 98.2 % (the default, the authors' 2024 scoring; then the bound variant, docs/px.md §2)
    vs a random mask, same short CPU recipe."""
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pxprune demo``."""
    p = sub.add_parser("demo", help="PX (the default, then its bound variant) vs random at "
                                    "98.2 %% on CIFAR-10, short CPU training")
    p.add_argument("--dataset", "--data", default=DEMO.dataset,
                   help="cifar10 (default) or a .pt/.npz file (then --test-dataset or --holdout)")
    p.add_argument("--test-dataset", default=None, help="a .pt/.npz file to test on")
    p.add_argument("--holdout", type=float, default=DEMO.holdout,
                   help="test on this fraction of a --dataset file, held out per class")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

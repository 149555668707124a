"""Which ingredient of PX ``variant="cvpr2024"`` avoids the layer collapse? Prune only, no training.

ResNet-20 at init (seed 0), CIFAR-10 pruning split (10 per class, seed 0), 100 rounds, global
threshold, 98.2 % sparsity: the same masks as the sweep's cells. Four scores:
``paper`` (|dR/dtheta^2| theta^2), ``paper x |theta|^3`` (the 2024 exponent on our copies),
``cvpr2024`` (|dR/dtheta^2| |theta|^5 on the 2024 copies) and ``cvpr2024 / |theta|^3`` (the
2024 copies with Eq. 9's exponent). Writes benchmarks/results/px_variants_ablation.json.
With ``--train`` it also trains the two mixed scores (seeds 0-2) with the sweep's small CPU
protocol, each cell a resumable run folder in sweeps/px_ablation_cpu_small, and adds their
accuracies to the JSON (the two pure ones are cells of the sweep itself).
Usage: PXPRUNE_DATA=../shared/data python benchmarks/px_variants_ablation.py [--train]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import pxprune
from pxprune.data.sampling import pruning_batch
from pxprune.experiments.config import RunConfig
from pxprune.experiments.run import initial_model, load_splits, run_experiment
from pxprune.experiments.sweep.grid import sparsity_label
from pxprune.methods import REGISTRY, register

PX = REGISTRY["px"].score


def _reweighted(variant: str, power: int):
    """PX ``variant`` scores times ``|theta|**power`` (masked theta; 0 where pruned)."""

    def score(model, batches, masks, *, seed=0):
        s = PX(model, batches, masks, seed=seed, variant=variant)
        params = dict(model.named_parameters())
        out = {}
        for name, v in s.items():
            theta = (params[name].detach() * masks[name].to(params[name].dtype)).abs().double()
            if power >= 0:
                out[name] = v * theta ** power
            else:
                out[name] = torch.where(theta > 0, v / theta.clamp_min(1e-300) ** -power,
                                        torch.zeros_like(v))
        return out

    return score


SCORES = {
    "paper": ("bound", 0),
    "paper_x_theta3": ("bound", 3),
    "cvpr2024": ("cvpr2024", 0),
    "cvpr2024_div_theta3": ("cvpr2024", -3),
}


PROTOCOL = dict(recipe="cpu_small", epochs=2, lr=0.05, batch_size=32, train_per_class=200,
                test_per_class=100)  # benchmarks/sweep_resnet20_cpu_small.sh
TRAINED = ("paper_x_theta3", "cvpr2024_div_theta3")


def _method_name(key: str) -> str:
    """A registry name for an ablation score (letters only, as method specs want)."""
    return "abl" + key.replace("_", "")


def _register_all() -> None:
    """Register every ablation score under its registry name."""
    for key, (variant, power) in SCORES.items():
        register(_method_name(key), needs_data=True, default_rounds=100)(
            _reweighted(variant, power))


def train_cells(sparsity: float, seeds=(0, 1, 2)) -> dict:
    """Train the mixed scores with the sweep's protocol; {key: {seed: final test acc}}."""
    out = Path("sweeps/px_ablation_cpu_small")
    accs: dict = {}
    for key in TRAINED:
        for seed in seeds:
            cfg = RunConfig(method=_method_name(key), sparsity=sparsity, seed=seed, **PROTOCOL)
            folder = out / key / sparsity_label(sparsity) / f"seed{seed}"
            summary = run_experiment(cfg, folder, progress=False, log=lambda _m: None)
            accs.setdefault(key, {})[str(seed)] = {
                "final_test_acc": summary["final_test_acc"],
                "collapsed_layers": summary["prune"]["collapsed_layers"]}
            print(f"{key} seed {seed}: {summary['final_test_acc']} % "
                  f"({len(summary['prune']['collapsed_layers'])} collapsed)")
    return accs


def main() -> None:
    """Prune once per score and record per-layer density and collapsed layers."""
    sparsity = 0.98198627
    _register_all()
    path = Path(__file__).parent / "results" / "px_variants_ablation.json"
    if "--train" in sys.argv:
        record = json.loads(path.read_text())
        record["trained"] = {"protocol": PROTOCOL, "cells": train_cells(sparsity)}
        path.write_text(json.dumps(record, indent=1) + "\n")
        return
    cfg = RunConfig(method="px", sparsity=sparsity, seed=0, **PROTOCOL)
    train_set, _ = load_splits(cfg)
    x, y = pruning_batch(train_set, cfg.per_class, cfg.seed)
    results = {}
    for key in SCORES:
        model = initial_model(cfg, train_set.num_classes)
        start = time.perf_counter()
        masks = pxprune.prune(model, _method_name(key), sparsity, (x, y), seed=cfg.seed,
                              progress=False)
        results[key] = {"variant": SCORES[key][0], "theta_power_added": SCORES[key][1],
                        "density": masks.density(), "layer_density": masks.layer_density(),
                        "collapsed_layers": masks.collapsed_layers(),
                        "seconds": round(time.perf_counter() - start, 1)}
        print(f"{key:22s} collapsed {len(masks.collapsed_layers())}: "
              f"{', '.join(masks.collapsed_layers())}")
    path.write_text(json.dumps({"sparsity": sparsity, "model": "resnet20 (seed 0 init)",
                                "data": "CIFAR-10 pruning split, 10/class, seed 0",
                                "rounds": 100, "scope": "global", "results": results},
                               indent=1) + "\n")


if __name__ == "__main__":
    main()

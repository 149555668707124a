"""Which ingredient of PX ``variant="cvpr2024"`` avoids the layer collapse? Prune only, no training.

ResNet-20 at init (seed 0), CIFAR-10 pruning split (10 per class, seed 0), 100 rounds, global
threshold, 98.2 % sparsity: the same masks as the sweep's cells. Four scores:
``paper`` (|dR/dtheta^2| theta^2), ``paper x |theta|^3`` (the 2024 exponent on our copies),
``cvpr2024`` (|dR/dtheta^2| |theta|^5 on the 2024 copies) and ``cvpr2024 / |theta|^3`` (the
2024 copies with Eq. 9's exponent). Writes benchmarks/results/px_variants_ablation.json.
Usage: PXPRUNE_DATA=../shared/data python benchmarks/px_variants_ablation.py [sparsity]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import pxprune
from pxprune.methods import REGISTRY, register
from pxprune.pipeline import RunConfig, initial_model, load_splits
from pxprune.resolve import pruning_batch

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
    "paper": ("paper", 0),
    "paper_x_theta3": ("paper", 3),
    "cvpr2024": ("cvpr2024", 0),
    "cvpr2024_div_theta3": ("cvpr2024", -3),
}


def main() -> None:
    """Prune once per score and record per-layer density and collapsed layers."""
    sparsity = float(sys.argv[1]) if len(sys.argv) > 1 else 0.98198627
    cfg = RunConfig(method="px", sparsity=sparsity, seed=0, recipe="cpu_small", epochs=2,
                    lr=0.05, batch_size=32, train_per_class=200, test_per_class=100)
    train_set, _ = load_splits(cfg)
    x, y = pruning_batch(train_set, cfg.per_class, cfg.seed)
    results = {}
    for key, (variant, power) in SCORES.items():
        name = f"_ablation_{key}"
        register(name, needs_data=True, default_rounds=100)(_reweighted(variant, power))
        model = initial_model(cfg, train_set.num_classes)
        start = time.perf_counter()
        masks = pxprune.prune(model, name, sparsity, (x, y), seed=cfg.seed, progress=False)
        results[key] = {"variant": variant, "theta_power_added": power,
                        "density": masks.density(), "layer_density": masks.layer_density(),
                        "collapsed_layers": masks.collapsed_layers(),
                        "seconds": round(time.perf_counter() - start, 1)}
        print(f"{key:22s} collapsed {len(masks.collapsed_layers())}: "
              f"{', '.join(masks.collapsed_layers())}")
    out = Path(__file__).parent / "results" / "px_variants_ablation.json"
    out.write_text(json.dumps({"sparsity": sparsity, "model": "resnet20 (seed 0 init)",
                               "data": "CIFAR-10 pruning split, 10/class, seed 0",
                               "rounds": 100, "scope": "global", "results": results},
                              indent=1) + "\n")


if __name__ == "__main__":
    main()

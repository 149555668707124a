"""Which of the 2024 copies' three differences matters? One change at a time from ``cvpr2024``.

``cvpr2024`` differs from DESIGN §3 in its copies (real weights in copy 1, raw ``x``,
batch-statistics BatchNorm) and in its exponent. Keeping the exponent ``|theta|^5``, each
ablation changes one copy ingredient back towards DESIGN §3:

- ``evalbn``: BatchNorm in eval mode (running statistics) in both copies;
- ``ones1``: copy 1 with every kept weight set to 1 (what the 2024 fill meant to do);
- ``xsq1``: copy 1 fed ``x**2`` instead of ``x``.

Prunes ResNet-20 (seed init, 10/class split, 100 rounds, global, 98.2 %) and trains with the
small CPU protocol, seeds 0-2, in sweeps/px_ingredients_cpu_small; writes
benchmarks/results/px_variants_ingredients.json.
Usage: PXPRUNE_DATA=../shared/data python benchmarks/px_variants_ingredients.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

import pxprune.methods.px.cvpr2024 as px_module
from pxprune.experiments.config import RunConfig
from pxprune.experiments.run import run_experiment
from pxprune.experiments.sweep.grid import sparsity_label
from pxprune.methods import REGISTRY, register

SPARSITY = 0.98198627
PROTOCOL = dict(recipe="cpu_small", epochs=2, lr=0.05, batch_size=32, train_per_class=200,
                test_per_class=100)  # benchmarks/sweep_resnet20_cpu_small.sh
ABLATIONS = ("evalbn", "ones1", "xsq1")
BASE = px_module.Cvpr2024Copy


class _Ablated(BASE):
    """The 2024 copies with one ingredient (``MODE``) changed."""

    MODE = ""

    def __init__(self, model, weights, biases, square, dtype):
        if self.MODE == "ones1" and not square:
            weights = {k: (v != 0).to(v.dtype) for k, v in weights.items()}
        super().__init__(model, weights, biases, square, dtype)
        self._first = True

    def _weighted(self, call):
        if self.MODE == "xsq1" and not self.square and self._first:
            self._first = False
            call = call.with_(input=call.get("input").square())
        return super()._weighted(call)

    def _batch_norm(self, call):
        if self.MODE != "evalbn":
            return super()._batch_norm(call)
        self.nonlinear_calls += 1
        return F.batch_norm(call.get("input"), call.get("running_mean").to(self.dtype),
                            call.get("running_var").to(self.dtype),
                            self._cast(call.get("weight")), self._cast(call.get("bias")), False,
                            0.0, float(call.get("eps", 1e-5)))


def _scorer(mode: str):
    """The cvpr2024 score computed with the ``mode`` copies."""

    def score(model, batches, masks, *, seed=0):
        _Ablated.MODE = mode
        px_module.Cvpr2024Copy = _Ablated
        try:
            return REGISTRY["px"].score(model, batches, masks, seed=seed, variant="cvpr2024")
        finally:
            px_module.Cvpr2024Copy = BASE

    return score


def main() -> None:
    """Train every ablation for seeds 0-2 and record accuracy, collapse and fc density."""
    torch.set_num_threads(1)
    out = Path("sweeps/px_ingredients_cpu_small")
    record: dict = {"sparsity": SPARSITY, "protocol": PROTOCOL, "cells": {}}
    for mode in ABLATIONS:
        name = f"cvpringr{mode}"
        register(name, needs_data=True, default_rounds=100)(_scorer(mode))
        for seed in (0, 1, 2):
            cfg = RunConfig(method=name, sparsity=SPARSITY, seed=seed, **PROTOCOL)
            folder = out / mode / sparsity_label(SPARSITY) / f"seed{seed}"
            s = run_experiment(cfg, folder, progress=False, log=lambda _m: None)
            info = s["prune"]
            record["cells"].setdefault(mode, {})[str(seed)] = {
                "final_test_acc": s["final_test_acc"],
                "collapsed_layers": info["collapsed_layers"],
                "layer_density": info["layer_density"]}
            print(f"{mode} seed {seed}: {s['final_test_acc']} %, "
                  f"{len(info['collapsed_layers'])} collapsed "
                  f"{[c.removesuffix('.weight') for c in info['collapsed_layers']]}, "
                  f"fc {100 * info['layer_density']['fc.weight']:.1f} %", flush=True)
    path = Path(__file__).parent / "results" / "px_variants_ingredients.json"
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

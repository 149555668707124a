"""The ``summary.json`` of a finished training run: accuracies, kept parameters, MACs, recipe."""

from __future__ import annotations

import torch
from torch import nn

from ..analysis.flops import count_flops
from ..data.dataset import ImageDataset
from ..masks import Masks
from .recipes import Recipe


def kept_macs(model: nn.Module, shape: tuple[int, ...], masks: Masks | None) -> dict | None:
    """Dense and kept MACs (pxprune.analysis.flops), or the error that stopped the count."""
    try:
        f = count_flops(model, shape, masks)
    except Exception as exc:  # a model the counter cannot trace must not fail a finished run
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {k: f[k] for k in ("dense_macs", "kept_macs", "density_macs") if k in f}


def run_summary(
    model: nn.Module, masks: Masks | None, train_set: ImageDataset, history: list[dict],
    recipe: Recipe, seed: int, world: int, device: torch.device, fingerprint: str,
) -> dict:
    """The summary.json content of a finished run (before its precision fields)."""
    accs = [(r["test_acc"], r["epoch"]) for r in history if r.get("test_acc") is not None]
    best = max(accs, key=lambda a: a[0]) if accs else (None, None)
    total_params = sum(p.numel() for p in model.parameters())
    if masks is not None:
        kept, prunable = masks.kept, masks.total
    else:
        kept = prunable = Masks.ones(model).total
    last = history[-1] if history else {}
    return {
        "final_test_acc": last.get("test_acc"),
        "final_test_loss": last.get("test_loss"),
        "final_train_loss": last.get("train_loss"),
        "best_test_acc": best[0],
        "best_epoch": best[1],
        # one class predicted for every test image: the accuracy says nothing of the masks
        "constant_predictions": last.get("test_classes_predicted") == 1,
        "epochs": len(history),
        "kept_params": kept,
        "total_params": prunable,
        "density": kept / prunable if prunable else 1.0,
        "model_params": total_params,
        "model_params_kept": total_params - (prunable - kept),
        "collapsed_layers": masks.collapsed_layers() if masks is not None else [],
        "flops": kept_macs(model, tuple(train_set.image_shape), masks),
        "train_seconds": sum(r["seconds"] for r in history),
        "recipe": recipe.to_dict(),
        "seed": seed,
        "world_size": world,
        "device": str(device),
        "masks_sha256": fingerprint,
    }

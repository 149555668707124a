"""Test accuracy and loss of one module, sharded over ranks when distributed."""

from __future__ import annotations

import torch
from torch import nn

from ..data.dataset import ImageDataset
from ..data.loader import iterate_batches
from . import distributed as D
from .precision import autocast, resolve_precision
from .recipes import Recipe


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    recipe: Recipe | None = None,
) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy of ``model`` (eval mode) on ``dataset``.

    When distributed, each rank scores a contiguous share and the sums are all-reduced, so every
    rank returns the same numbers. ``recipe`` only decides autocast: CUDA AMP as the
    recipe says; on CPU evaluation is fp32 (bf16 is a training speed-up; accuracies are
    measured in full precision).
    """
    device = torch.device(device)
    model = D.unwrap(model)
    was_training = model.training
    model.eval()
    lo, hi = D.shard_range(len(dataset), D.get_rank(), D.get_world_size())
    part = dataset.subset(torch.arange(lo, hi)) if (lo, hi) != (0, len(dataset)) else dataset
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    predicted = torch.zeros(0, dtype=torch.bool, device=device)  # which classes were predicted
    precision = (resolve_precision(recipe.precision, device, recipe.amp, recipe.amp_dtype)
                 if recipe is not None else "fp32")
    amp = autocast(device, precision if device.type == "cuda" else "fp32")
    try:
        for x, y in iterate_batches(part, batch_size, shuffle=False, device=device):
            with amp:
                out = model(x)
            out = out.float()
            loss_sum += nn.functional.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
            if predicted.numel() < out.shape[1]:
                predicted = torch.zeros(out.shape[1], dtype=torch.bool, device=device)
            predicted[out.argmax(1)] = True
    finally:
        model.train(was_training)
    loss, corr, n = D.all_reduce_sum([loss_sum.item(), correct.item(), hi - lo])
    return {"loss": loss / max(n, 1), "acc": 100.0 * corr / max(n, 1), "count": int(n),
            "classes_predicted": int(predicted.sum())}

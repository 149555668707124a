"""Fine-tuning a pruned backbone with its mask fixed (through the training loop), after
recomputing its BatchNorm statistics; images resized for ImageNet networks."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageDataset
from ..masks import Masks
from ..training.recipes import Recipe, get_recipe
from ..training.train import train
from .features import iterate_inputs, prepare_inputs


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, dataset: ImageDataset, *, images: int = 2048, seed: int = 0,
    batch_size: int = 256, size: int | None = None, device: str | torch.device = "cpu",
) -> int:
    """Recompute every BatchNorm's running statistics on ``images`` seeded training images
    (train-mode forwards, cumulative average, no weight changes); returns the count used.

    After pruning, the running statistics are still the dense network's: the eval-mode
    features a probe is fitted on can be nearly constant (Lite0 at 98 %: ridge l2 ~1e-11, head
    weights ~1e5), and once fine-tuning switches BN to batch statistics the loss starts at ~1e5.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(images, len(dataset))].sort().values
    subset = (dataset.images[idx], dataset.labels[idx])
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    model.to(device).train()
    try:
        for x, _ in iterate_inputs(
                (prepare_inputs(subset[0], dataset.mean, dataset.std, size), subset[1]),
                batch_size, None, device):
            model(x)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return len(idx)


def resize_dataset(dataset: ImageDataset, size: int) -> ImageDataset:
    """The dataset with uint8 images resized (bilinear) to ``size`` x ``size`` (ImageNet nets)."""
    if dataset.image_shape[1:] == (size, size):
        return dataset
    chunks = []
    for i in range(0, len(dataset), 1024):
        x = dataset.images[i : i + 1024].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        chunks.append(x.round().clamp_(0, 255).to(torch.uint8))
    return replace(dataset, images=torch.cat(chunks))


def finetune(
    model: nn.Module,
    masks: Masks | None,
    train_set: ImageDataset,
    test_set: ImageDataset | None,
    recipe: object = "cpu_small",
    *,
    epochs: int | None = None,
    out_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    seed: int = 0,
    size: int | None = None,
    progress: bool = False,
    log: Callable[[str], object] | None = None,
) -> dict:
    """Fine-tune the whole (pruned) model with the masks held fixed; return the run summary.

    Uses :func:`pxprune.training.train.train` (resumable run folder ``out_dir``). ``recipe`` is a
    Recipe
    or a preset name; ``epochs`` overrides its length; ``size`` resizes the images first. Pass
    datasets normalised for the backbone (``ds.with_normalization(*backbone_normalization(n))``).
    """
    if isinstance(recipe, str):
        rec = get_recipe(recipe) if epochs is None else get_recipe(recipe, epochs=epochs)
    elif isinstance(recipe, Recipe):
        rec = recipe if epochs is None else replace(recipe, epochs=int(epochs))
    else:
        raise TypeError(f"recipe must be a Recipe or a preset name, got {type(recipe).__name__}")
    if size is not None:
        train_set = resize_dataset(train_set, size)
        test_set = None if test_set is None else resize_dataset(test_set, size)
    return train(model, masks, train_set, test_set, rec, out_dir=out_dir, device=device,
                 seed=seed, progress=progress, log=log)


__all__ = ["finetune", "recalibrate_batchnorm", "resize_dataset"]

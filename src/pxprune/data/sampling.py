"""Class-balanced selections: the seeded pruning split and first-n-per-class subsets."""

from __future__ import annotations

import torch

from ..errors import DataError
from .augment import normalize
from .dataset import ImageDataset
from .loader import derive_seed


def _check_counts(dataset: ImageDataset, need: int, what: str) -> None:
    counts = dataset.class_counts()
    short = [(i, int(c)) for i, c in enumerate(counts.tolist()) if c < need]
    if short:
        i, c = short[0]
        more = f" (and {len(short) - 1} more classes)" if len(short) > 1 else ""
        raise DataError(
            f"{dataset.name}: class {i} '{dataset.classes[i]}' has {c} examples, "
            f"{what} needs {need}{more}"
        )


def pruning_indices(dataset: ImageDataset, per_class: int = 10, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded, class-balanced draw: `per_class` per class, grouped by class."""
    _check_counts(dataset, per_class, "the pruning split")
    g = torch.Generator().manual_seed(derive_seed(seed, 2))
    perm = torch.randperm(len(dataset), generator=g)
    labels = dataset.labels[perm]
    order = torch.argsort(labels, stable=True)  # by class, random within class
    counts = torch.bincount(labels, minlength=dataset.num_classes)
    starts = torch.cumsum(counts, 0) - counts
    pick = (starts[:, None] + torch.arange(per_class)[None, :]).reshape(-1)
    return perm[order[pick]]


def pruning_split(
    dataset: ImageDataset, per_class: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, labels) of the class-balanced seeded pruning split, no augmentation."""
    idx = pruning_indices(dataset, per_class, seed)
    return dataset.images[idx], dataset.labels[idx]


def limit_per_class(
    dataset: ImageDataset, n: int, offset: int = 0, strict: bool = True
) -> ImageDataset:
    """The examples ranked offset..offset+n-1 within each class, in the dataset's own order."""
    if strict:
        _check_counts(dataset, offset + n, f"limit_per_class(n={n}, offset={offset})")
    labels = dataset.labels
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=dataset.num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels)) - starts[labels[order]]
    keep = (rank >= offset) & (rank < offset + n)
    return dataset.subset(torch.nonzero(keep).flatten())


def pruning_batch(dataset: ImageDataset, per_class: int = 10, seed: int = 0,
                  mean=None, std=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The class-balanced pruning split as one (input, target) batch, normalised with the
    dataset's statistics (or ``mean`` / ``std``): what every data-driven method scores."""
    images, labels = pruning_split(dataset, per_class=per_class, seed=seed)
    x = normalize(images, mean or dataset.mean, std or dataset.std) \
        if images.dtype == torch.uint8 else images.float()
    return x, labels

"""Mini-batches whose order and augmentation depend only on (seed, epoch, batch index)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .augment import normalize, random_crop_flip
from .dataset import ImageDataset


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from non-negative integer keys (independent streams per key tuple)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The example order of one epoch: a seeded permutation, or 0..n-1 without shuffling."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, 0))
    return torch.randperm(n, generator=g)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches an epoch of n examples gives."""
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    dataset: ImageDataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    augment: bool = False,
    device: str | torch.device = "cpu",
    drop_last: bool = False,
    start_batch: int = 0,
    padding: int = 4,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (normalised float images, labels) on `device`; resume mid-epoch with start_batch."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device)
    n = len(dataset)
    order = epoch_order(n, seed, epoch, shuffle)
    for b in range(start_batch, num_batches(n, batch_size, drop_last)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        x = dataset.images[idx].to(device, non_blocking=True)
        y = dataset.labels[idx].to(device, non_blocking=True)
        if augment:
            g = torch.Generator().manual_seed(derive_seed(seed, epoch, 1, b))
            x = random_crop_flip(x, padding=padding, generator=g)
        yield normalize(x, dataset.mean, dataset.std), y


@dataclass
class Loader:
    """Re-iterable batches of a dataset; set `epoch` (or call set_epoch) before each pass."""

    dataset: ImageDataset
    batch_size: int
    shuffle: bool = True
    seed: int = 0
    augment: bool = False
    device: str | torch.device = "cpu"
    drop_last: bool = False
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch."""
        return num_batches(len(self.dataset), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the current epoch."""
        return self.iter_epoch(self.epoch)

    def iter_epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of `epoch` from `start_batch` on (for exact mid-epoch resume)."""
        return iterate_batches(
            self.dataset, self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=epoch,
            augment=self.augment, device=self.device, drop_last=self.drop_last,
            start_batch=start_batch,
        )

"""A dataset held on the training device as uint8, batched for K cells with crop and flip there.

The order and the crop/flip draws are exactly those of :func:`pxprune.data.loader.iterate_batches`
(the same (seed, epoch, batch) streams), so a cell fed from here sees the batches the ordinary
loader would give it. Per epoch and per (seed, epoch) group the permutation and every batch's
draws are made once on the host (a few thousand small integers) and copied to the device in one
go; each step then gathers, crops, flips and normalises on the device: no per-batch host work.
Cells that share a seed and an epoch share one augmented batch (augmented once, then indexed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .augment import crop_flip, normalize
from .dataset import ImageDataset
from .loader import derive_seed, epoch_order, num_batches

PADDING = 4  # the CIFAR crop padding iterate_batches uses


@dataclass
class EpochPlan:
    """One (seed, epoch)'s example order and crop/flip draws, on the device."""

    order: torch.Tensor  # (N,) int64
    top: torch.Tensor  # (N,) draws in batch order (batch b owns the b-th slice)
    left: torch.Tensor
    flip: torch.Tensor


def plan_epoch(n: int, batch_size: int, seed: int, epoch: int, augment: bool,
               device: torch.device, padding: int = PADDING) -> EpochPlan:
    """The order and draws :func:`iterate_batches` would make for (seed, epoch), on ``device``."""
    order = epoch_order(n, seed, epoch, shuffle=True)
    tops, lefts, flips = [], [], []
    if augment:
        for b in range(num_batches(n, batch_size)):
            size = min(batch_size, n - b * batch_size)
            g = torch.Generator().manual_seed(derive_seed(seed, epoch, 1, b))
            tops.append(torch.randint(0, 2 * padding + 1, (size,), generator=g))
            lefts.append(torch.randint(0, 2 * padding + 1, (size,), generator=g))
            flips.append(torch.randint(0, 2, (size,), generator=g).bool())
    cat = (lambda parts: torch.cat(parts).to(device)) if augment else (lambda _p: None)
    return EpochPlan(order.to(device), cat(tops), cat(lefts), cat(flips))


class DeviceImages:
    """uint8 images and labels on one device, giving (K, B, C, H, W) batches for K cells."""

    def __init__(self, dataset: ImageDataset, device: str | torch.device,
                 dtype: torch.dtype = torch.float32, padding: int = PADDING) -> None:
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.mean, self.std = dataset.mean, dataset.std
        self.dtype, self.padding = dtype, padding

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.images.shape[0])

    def plan(self, batch_size: int, seed: int, epoch: int, augment: bool) -> EpochPlan:
        """This dataset's :func:`plan_epoch` for one (seed, epoch)."""
        return plan_epoch(len(self), batch_size, seed, epoch, augment, self.device, self.padding)

    def batch(self, plans: Sequence[EpochPlan], cell_plan: torch.Tensor | None,
              batch_size: int, b: int, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``b`` for every cell: ``plans`` are the distinct (seed, epoch) plans and
        ``cell_plan[k]`` the plan of cell k (None: one plan per cell, in order). Returns the
        normalised images (K, B, C, H, W) and labels (K, B)."""
        sl = slice(b * batch_size, (b + 1) * batch_size)
        idx = torch.stack([p.order[sl] for p in plans])  # (U, B)
        u, size = idx.shape
        x = self.images[idx.reshape(-1)]
        if augment:
            draws = [torch.cat([getattr(p, k)[sl] for p in plans]) for k in ("top", "left",
                                                                            "flip")]
            x = crop_flip(x, *draws, padding=self.padding)
        x = normalize(x, self.mean, self.std, self.dtype).reshape(u, size, *x.shape[1:])
        y = self.labels[idx]
        if cell_plan is not None:
            x, y = x[cell_plan], y[cell_plan]
        return x, y

    def eval_batches(self, batch_size: int):
        """(normalised images, labels) in order, for evaluation (shared by every cell)."""
        for start in range(0, len(self), batch_size):
            x = self.images[start:start + batch_size]
            yield normalize(x, self.mean, self.std, self.dtype), self.labels[start:start
                                                                             + batch_size]

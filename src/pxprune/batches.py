"""Normalising user data (a tensor, pairs, a DataLoader) into a list of (input, target) batches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .masks import PruningError

Batch = tuple[Tensor, Tensor | None]


def _one(item: object) -> Batch:
    if isinstance(item, Tensor):
        return item, None
    if isinstance(item, (tuple, list)) and len(item) >= 1 and isinstance(item[0], Tensor):
        target = item[1] if len(item) > 1 and isinstance(item[1], Tensor) else None
        return item[0], target
    raise PruningError(
        f"data must be a tensor, an (input, target) pair, or an iterable of those; got "
        f"{type(item).__name__}"
    )


def as_batches(data: object, device: torch.device | str | None = None) -> list[Batch]:
    """A list of (input, target-or-None) batches on ``device``; raises if there is no example."""
    if data is None:
        raise PruningError("this method needs data: pass a tensor or (input, target) batches")
    if isinstance(data, Tensor) or (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
        and data[0].dim() > data[1].dim()
    ):
        batches = [_one(data)]
    elif isinstance(data, Iterable):
        batches = [_one(item) for item in data]
    else:
        batches = [_one(data)]
    batches = [(x, y) for x, y in batches if x.shape[0] > 0]
    if not batches:
        raise PruningError("data has no examples")
    for x, y in batches:
        if y is not None and y.shape[0] != x.shape[0]:
            raise PruningError(f"{x.shape[0]} inputs but {y.shape[0]} targets in a batch")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise PruningError("data contains NaN or inf")
    if device is not None:
        batches = [(x.to(device), None if y is None else y.to(device)) for x, y in batches]
    return batches


def require_targets(batches: list[Batch], method: str) -> None:
    """Raise unless every batch carries targets (SNIP, GraSP need labels)."""
    if any(y is None for _, y in batches):
        raise PruningError(f"{method} needs labelled data: pass (input, target) batches")

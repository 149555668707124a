"""Normalising user data (a tensor, pairs, a DataLoader) into a list of (input, target) batches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .masks import PruningError
from .user_model import Output, eval_mode, logits_of

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
    batches = [(x, _labels(y)) for x, y in batches]
    if device is not None:
        batches = [(x.to(device), None if y is None else y.to(device)) for x, y in batches]
    return batches


def _labels(y: Tensor | None) -> Tensor | None:
    """Class-index labels as int64 (what the losses take); anything else is refused."""
    if y is None:
        return None
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise PruningError(f"labels must be integers (class indices), got {y.dtype}"
                           + (" (one-hot or soft labels: pass labels.argmax(1))"
                              if y.dim() == 2 else ""))
    if y.dim() != 1:
        raise PruningError(f"labels must be a 1-D tensor of class indices, got shape "
                           f"{tuple(y.shape)}" + (" (one-hot labels: pass labels.argmax(1))"
                                                  if y.dim() == 2 else ""))
    if y.numel() and int(y.min()) < 0:
        raise PruningError(f"labels must be >= 0, found {int(y.min())}")
    return y.long()


def input_channels(model: nn.Module) -> int | None:
    """The channel count the model's first convolution expects (None without one)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module.in_channels
        if isinstance(module, nn.Linear):
            return None  # a linear layer comes first: no channel dimension to check
    return None


@torch.no_grad()
def check_batches(model: nn.Module, batches: list[Batch], output: Output = None) -> int | None:
    """Refuse data the model cannot take, in one line before any scoring: integer images
    (uint8 pixels), another channel count or image size than the model's, a batch of one
    through BatchNorm1d, labels beyond the model's outputs. Returns the number of outputs."""
    expected = input_channels(model)
    one_d_norm = any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    for x, _ in batches:
        if not x.is_floating_point():
            raise PruningError(f"images must be floating point, got {x.dtype}; convert pixels "
                               f"with x.float() / 255 and normalise them")
        if expected is not None and x.dim() >= 2 and x.shape[1] != expected:
            raise PruningError(f"the images have {x.shape[1]} channel(s) but the model's first "
                               f"convolution expects {expected}; convert the images (e.g. grey "
                               f"to RGB) or use a model for {x.shape[1]}-channel input")
        if one_d_norm and x.shape[0] < 2:
            raise PruningError("a batch of one example cannot pass BatchNorm1d with batch "
                               "statistics; give batches of at least two examples")
    x = batches[0][0]
    try:
        with eval_mode(model), logits_of(model, output):
            first = next(model.parameters(), None)  # none: nothing prunable, said later
            out = model(x[:1] if first is None else x[:1].to(first.device))
    except RuntimeError as exc:  # a size the model cannot take
        first = (str(exc).splitlines() or [""])[0][:200]
        raise PruningError(f"the model cannot take these images {tuple(x.shape[1:])}: "
                           f"{first}") from exc
    outputs = out.shape[1] if out.dim() >= 2 else None
    labels = [y for _, y in batches if y is not None and y.numel()]
    if outputs is not None and labels:
        hi = max(int(y.max()) for y in labels)
        if hi >= outputs:
            raise PruningError(f"labels go up to {hi} but the model has {outputs} outputs; "
                               f"give the model {hi + 1} outputs or relabel the data to "
                               f"0..{outputs - 1}")
    return outputs


def require_targets(batches: list[Batch], method: str) -> None:
    """Raise unless every batch carries targets (SNIP, GraSP need labels)."""
    if any(y is None for _, y in batches):
        raise PruningError(f"{method} needs labelled data: pass (input, target) batches")

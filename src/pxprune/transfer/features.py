"""Features for transfer: the backbone's penultimate activations (the classifier's input) and
the prepared float inputs (normalised uint8 images, resized for ImageNet networks)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageDataset, normalize
from ..errors import PxpruneError
from .head import classifier_module


def _as_inputs(
    data: ImageDataset | Tensor | tuple[Tensor, Tensor],
) -> tuple[Tensor, Tensor | None, tuple[float, ...] | None, tuple[float, ...] | None]:
    """(images, labels, mean, std) from a dataset, a tensor or an (images, labels) pair."""
    if isinstance(data, ImageDataset):
        return data.images, data.labels, data.mean, data.std
    if isinstance(data, Tensor):
        return data, None, None, None
    x, y = data
    return x, y, None, None


def prepare_inputs(
    images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None,
    size: int | None = None,
) -> Tensor:
    """Float inputs: uint8 normalised with (mean, std), then resized (bilinear) to ``size``."""
    x = normalize(images, mean, std) if images.dtype == torch.uint8 else images.float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def iterate_inputs(
    data: ImageDataset | Tensor | tuple[Tensor, Tensor], batch_size: int = 256,
    size: int | None = None, device: str | torch.device = "cpu",
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield (prepared float inputs, labels) in the data's order, without augmentation."""
    images, labels, mean, std = _as_inputs(data)
    if images.dtype == torch.uint8 and mean is None:
        raise PxpruneError("uint8 images need normalisation statistics: pass an ImageDataset")
    for i in range(0, images.shape[0], batch_size):
        x = prepare_inputs(images[i : i + batch_size], mean, std, size).to(device)
        y = None if labels is None else labels[i : i + batch_size]
        yield x, y


@torch.no_grad()
def extract_features(
    model: nn.Module,
    dataset: ImageDataset | Tensor | tuple[Tensor, Tensor],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    *,
    size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(penultimate features float32 (N, D) on CPU, labels): the classifier input, eval mode.

    A forward hook on the classifier records its input; the model is used as it is, so masks
    already applied (pruned weights at 0) are respected. ``size`` resizes the images first.
    """
    head = classifier_module(model)
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    handle = head.register_forward_hook(lambda _m, inp, _out: feats.append(inp[0].detach()))
    was_training = model.training
    model.eval().to(device)
    try:
        for x, y in iterate_inputs(dataset, batch_size, size, device):
            model(x)
            if y is not None:
                labels.append(y)
    finally:
        handle.remove()
        model.train(was_training)
    f = torch.cat([t.flatten(1).float().cpu() for t in feats])
    return f, (torch.cat(labels) if labels else None)


__all__ = ["extract_features", "iterate_inputs", "prepare_inputs"]

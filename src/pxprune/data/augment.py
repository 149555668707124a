"""Augmentation and normalisation on batched tensors, on whatever device the batch lives."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def crop_flip(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int
) -> torch.Tensor:
    """Crop each zero-padded image at (top, left) in padded coordinates, mirror where `flip`."""
    n, c, h, w = x.shape
    dev = x.device
    top, left, flip = top.to(dev), left.to(dev), flip.to(dev, torch.bool)
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = top[:, None] + torch.arange(h, device=dev)  # (N, H)
    cols = torch.arange(w, device=dev).expand(n, w)
    cols = torch.where(flip[:, None], (w - 1) - cols, cols) + left[:, None]  # (N, W)
    flat_hw = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).reshape(n, 1, h * w)
    src = padded.reshape(n, c, -1)
    return src.gather(2, flat_hw.expand(n, c, h * w)).reshape(n, c, h, w)


def random_crop_flip(
    x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample random crop with zero padding plus random horizontal flip (CIFAR recipe)."""
    n = x.shape[0]
    gdev = generator.device if generator is not None else torch.device("cpu")
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gdev)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gdev)
    flip = torch.randint(0, 2, (n,), generator=generator, device=gdev).bool()
    return crop_flip(x, top, left, flip, padding)


def normalize(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(x/255 - mean)/std per channel for uint8 input; float input is taken as already in [0, 1]."""
    xf = x.to(dtype)
    if x.dtype == torch.uint8:
        xf = xf / 255.0
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return (xf - m) / s

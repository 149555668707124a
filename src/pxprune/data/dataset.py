"""The in-memory dataset: decoded uint8 images plus labels, class names and normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import DataError

# Normalisation statistics (per channel, on pixels scaled to [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINYIMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINYIMAGENET_STD = (0.2770, 0.2691, 0.2821)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


@dataclass
class ImageDataset:
    """Decoded images (uint8, N x C x H x W), int64 labels, class names and the mean/std to use."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    def __post_init__(self) -> None:
        """Check shapes and dtypes once so that every consumer can rely on them."""
        if isinstance(self.images, np.ndarray):
            self.images = torch.from_numpy(np.ascontiguousarray(self.images))
        if isinstance(self.labels, np.ndarray):
            self.labels = torch.from_numpy(np.ascontiguousarray(self.labels))
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"{self.name}: images must be uint8 N x C x H x W, got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        self.labels = self.labels.to(torch.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.name}: {self.images.shape[0]} images but labels of shape "
                f"{tuple(self.labels.shape)}"
            )
        self.classes = list(self.classes)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(f"{self.name}: mean/std need {channels} entries")
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise DataError(
                f"{self.name}: labels outside [0, {len(self.classes)}): "
                f"min {int(self.labels.min())}, max {int(self.labels.max())}"
            )

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        """A summary (name, size, classes), not the pixels."""
        n, c, h, w = self.images.shape
        names = ", ".join(self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
        return (f"ImageDataset({self.name!r}: {n:,} images of {c}x{h}x{w} uint8, "
                f"{len(self.classes)} classes [{names}])")

    @property
    def num_classes(self) -> int:
        """Number of classes (length of `classes`, whether or not each one has examples)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> ImageDataset:
        """A new dataset holding the given examples in the given order (classes, stats kept)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64).reshape(-1)
        return replace(self, images=self.images[idx], labels=self.labels[idx])

    def with_normalization(
        self, mean: Sequence[float], std: Sequence[float]
    ) -> ImageDataset:
        """The same data with other normalisation statistics (e.g. those of pre-trained weights)."""
        return replace(self, mean=tuple(mean), std=tuple(std))

    def class_counts(self) -> torch.Tensor:
        """Examples per class, a length-`num_classes` int64 tensor."""
        return torch.bincount(self.labels, minlength=self.num_classes)

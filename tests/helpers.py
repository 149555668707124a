"""Helpers shared by the test modules (the fixtures are in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from pxprune.data import ImageDataset
from pxprune.masks import Masks

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PXPRUNE_DATA", REPO.parent / "shared" / "data"))


def tiny_net(num_classes: int = 4, seed: int = 0) -> nn.Module:
    """A small BN conv net (conv-BN-ReLU x2, pool, linear) that trains in well under a second."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def synthetic(n: int, seed: int, num_classes: int = 4, size: int = 8) -> ImageDataset:
    """uint8 images whose class sets which colour channel is bright: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = torch.randint(0, 120, (n, 3, size, size), generator=g)
    for c in range(num_classes):
        images[labels == c, c % 3] += 100 + 30 * (c // 3)
    return ImageDataset(images.to(torch.uint8), labels, [f"c{i}" for i in range(num_classes)],
                        (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "synthetic")


def random_masks(model: nn.Module, density: float, seed: int) -> Masks:
    """Random masks keeping about ``density`` of every prunable tensor (at least one weight)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in Masks.ones(model).items():
        keep = torch.rand(m.shape, generator=g) < density
        keep.view(-1)[0] = True
        out[name] = keep
    return Masks(out)


class Stop(Exception):
    pass


def stop_after(k: int):
    def cb(record: dict) -> None:
        if record["epoch"] == k:
            raise Stop

    return cb


METHODS = "random,magnitude,dense"


SPARSITIES = "50%,0.9"


def write_data(path, n: int = 48, num_classes: int = 4, size: int = 8, seed: int = 0) -> None:
    """Tiny learnable uint8 images (the class sets the bright channel) saved as a .pt file."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = torch.randint(0, 120, (n, 3, size, size), generator=g)
    for c in range(num_classes):
        images[labels == c, c % 3] += 100 + 30 * (c // 3)
    torch.save({"images": images.to(torch.uint8), "labels": labels}, path)


def sweep_args(data, out, *extra: str, methods: str = METHODS, seeds: str = "0,1") -> list[str]:
    return ["sweep", "--model", "resnet20", "--dataset", str(data), "--holdout", "0.25",
            "--methods", methods,
            "--sparsities", SPARSITIES, "--seeds", seeds, "--recipe", "cpu_small",
            "--epochs", "2", "--batch-size", "16", "--per-class", "2", "--device", "cpu",
            "--no-progress", "--out", str(out), *extra]

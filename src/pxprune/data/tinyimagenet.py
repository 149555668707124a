"""Tiny-ImageNet-200 layout: train/<wnid>/images/*.JPEG, val/val_annotations.txt + val/images/."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .decode import is_image_name

TINY_DIR = "tiny-imagenet-200"


def read_wnids(folder: Path) -> list[str]:
    """Sorted class ids from wnids.txt (sorted like torchvision's ImageFolder on train/)."""
    path = folder / "wnids.txt"
    if not path.is_file():
        raise DataError(f"missing Tiny-ImageNet class list {path}")
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids:
        raise DataError(f"empty Tiny-ImageNet class list {path}")
    return sorted(wnids)


def scan_tinyimagenet(
    folder: Path, split: str, max_per_class: int | None = None
) -> tuple[list[tuple[int, Path]], list[str]]:
    """(label, path) of every image of the split ("test" means the labelled val set)."""
    classes = read_wnids(folder)
    index = {c: i for i, c in enumerate(classes)}
    files: list[tuple[int, Path]] = []
    if split == "train":
        for wnid in classes:
            d = folder / "train" / wnid / "images"
            if not d.is_dir():
                raise DataError(f"missing Tiny-ImageNet train folder {d}")
            paths = sorted(p for p in d.iterdir() if is_image_name(p.name))
            files.extend((index[wnid], p) for p in paths[:max_per_class])
        return files, classes
    ann = folder / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"missing Tiny-ImageNet val annotations {ann}")
    per_class: dict[int, list[Path]] = {}
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{ann}, line {n}: bad annotation {line!r}")
        per_class.setdefault(index[fields[1]], []).append(folder / "val" / "images" / fields[0])
    for label in sorted(per_class):
        paths = sorted(per_class[label])[:max_per_class]
        files.extend((label, p) for p in paths)
    missing = [p for _, p in files if not p.is_file()]
    if missing:
        raise DataError(f"{ann} lists {len(missing)} missing images, e.g. {missing[0]}")
    return files, classes

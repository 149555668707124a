"""On-disk image folders: `<root>/<split>/<class>/<image>` (sorted class folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .decode import Geometry, Item, decode_many, is_image_name, to_nchw

SPLIT_NAMES = ("train", "test", "val")


def scan_image_folder(
    root: Path, split: str, max_per_class: int | None = None
) -> tuple[list[tuple[int, Path]], list[str]]:
    """(label, path) of each image of `root/split` in sorted order, and the sorted class names."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"missing split folder {split_dir}")
    classes = sorted(
        {d.name for s in SPLIT_NAMES if (root / s).is_dir() for d in (root / s).iterdir()
         if d.is_dir()}
    )
    index = {c: i for i, c in enumerate(classes)}
    files: list[tuple[int, Path]] = []
    for cls in sorted(d.name for d in split_dir.iterdir() if d.is_dir()):
        paths = sorted(p for p in (split_dir / cls).iterdir() if p.is_file() and
                       is_image_name(p.name))
        if max_per_class is not None:
            paths = paths[:max_per_class]
        files.extend((index[cls], p) for p in paths)
    if not files:
        raise DataError(f"no images under {split_dir}/<class>/ (expected jpg/png files)")
    return files, classes


def decode_files(
    files: list[tuple[int, Path]], geo: Geometry, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode (label, path) pairs to N x C x H x W uint8 images and int64 labels."""
    items: list[Item] = [(str(p), None) for _, p in files]
    images = decode_many(items, geo, workers)
    return to_nchw(images), np.array([lab for lab, _ in files], dtype=np.int64)

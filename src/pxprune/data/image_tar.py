"""Image folders packed in a tarball (`<split>/<class>/<file>`), streamed, not extracted."""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from .decode import Geometry, Item, decode_many, is_image_name, to_nchw
from .errors import DataError

SPLIT_NAMES = ("train", "test", "val")


def read_tar_split(tar_path: Path, split: str) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """(class, member name, bytes) of every image under `split/` and the sorted class names."""
    if not tar_path.is_file():
        raise DataError(f"missing image tarball {tar_path}")
    found: list[tuple[str, str, bytes]] = []
    classes: set[str] = set()
    try:
        with tarfile.open(tar_path, mode="r|*") as tf:
            for member in tf:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or len(parts) < 3 or not is_image_name(parts[-1]):
                    continue
                if parts[-3] in SPLIT_NAMES:  # class ids come from every split's folders
                    classes.add(parts[-2])
                if parts[-3] != split:
                    continue
                f = tf.extractfile(member)
                if f is None:
                    continue
                found.append((parts[-2], member.name, f.read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"corrupt or truncated tarball {tar_path}: {e!r}") from e
    if not found:
        raise DataError(f"tarball {tar_path} holds no images under '{split}/<class>/'")
    found.sort(key=lambda t: (t[0], t[1]))
    return found, sorted(classes)


def load_image_tar(
    tar_path: Path, split: str, geo: Geometry | None = None, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode one split of an image tarball: N x C x H x W uint8, labels by sorted folder name."""
    geo = geo or Geometry()
    found, classes = read_tar_split(tar_path, split)
    index = {c: i for i, c in enumerate(classes)}
    items: list[Item] = [(f"{tar_path}:{name}", data) for _, name, data in found]
    images = decode_many(items, geo, workers)
    labels = np.array([index[c] for c, _, _ in found], dtype=np.int64)
    return to_nchw(images), labels, classes

"""Image folders packed in a tarball (`<split>/<class>/<file>`), streamed, not extracted."""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from .decode import Geometry, Item, decode_stream, is_image_name, to_nchw

SPLIT_NAMES = ("train", "test", "val")


def iter_tar_split(tar_path: Path, split: str, classes: set[str]
                   ) -> Iterator[tuple[str, str, bytes]]:
    """Stream (class, member name, bytes) of each image under `split/`; fills `classes`."""
    if not tar_path.is_file():
        raise DataError(f"missing image tarball {tar_path}")
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
                if f is not None:
                    yield parts[-2], member.name, f.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"corrupt or truncated tarball {tar_path}: {e!r}") from e


def load_image_tar(
    tar_path: Path, split: str, geo: Geometry | None = None, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode one split of an image tarball: N x C x H x W uint8, labels by sorted folder name.

    Examples are ordered by (class, member name) whatever the order inside the tarball.
    """
    geo = geo or Geometry()
    class_set: set[str] = set()
    keys: list[tuple[str, str]] = []

    def items() -> Iterator[Item]:
        for cls, name, data in iter_tar_split(tar_path, split, class_set):
            keys.append((cls, name))
            yield f"{tar_path}:{name}", data

    images = decode_stream(items(), geo, workers)
    if not keys:
        raise DataError(f"tarball {tar_path} holds no images under '{split}/<class>/'")
    classes = sorted(class_set)
    index = {c: i for i, c in enumerate(classes)}
    order = sorted(range(len(keys)), key=keys.__getitem__)
    if order != list(range(len(keys))):
        images = images[order]
    labels = np.array([index[keys[i][0]] for i in order], dtype=np.int64)
    return to_nchw(images), labels, classes

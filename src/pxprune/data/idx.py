"""IDX files (MNIST / Fashion-MNIST format), plain or gzip-compressed."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_UBYTE = 0x08


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """An unsigned-byte IDX array; DataError naming the file on bad magic or short data."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file {path}: {e!r}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        raise DataError(
            f"bad IDX magic in {path}: {raw[:4].hex() or 'empty file'} "
            "(expected 0000 08 <ndim> for unsigned bytes)"
        )
    dims_n = raw[3]
    if ndim is not None and dims_n != ndim:
        raise DataError(f"IDX file {path} has {dims_n} dimensions, expected {ndim}")
    header = 4 + 4 * dims_n
    if len(raw) < header:
        raise DataError(f"truncated IDX header in {path}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=dims_n, offset=4))
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != size:
        raise DataError(
            f"IDX file {path} holds {len(raw) - header} data bytes, header says {size} {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def find_idx(folder: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz` inside `folder`, whichever exists."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N x 1 x H x W uint8 images, int64 labels) of an MNIST-style folder."""
    prefix = "train" if split == "train" else "t10k"
    img_path = find_idx(folder, f"{prefix}-images-idx3-ubyte")
    lab_path = find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lab_path is None:
        raise DataError(f"missing {prefix}-images/labels IDX files in {folder}")
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lab_path, ndim=1).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path} has {images.shape[0]} images but {lab_path} "
                        f"{labels.shape[0]} labels")
    return images[:, None], labels

"""CIFAR-10 / CIFAR-100 in the standard python-pickle layout (cifar-10-batches-py etc.)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"

# Only what the CIFAR pickles need: never run arbitrary code from a data file.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _key(d: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def read_pickle(path: Path) -> dict[Any, Any]:
    """Load one CIFAR pickle file (python 2 byte-string keys allowed); DataError when corrupt."""
    if not path.is_file():
        raise DataError(f"missing CIFAR file {path}")
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError) as e:
        raise DataError(f"corrupt or truncated CIFAR pickle {path}: {e!r}") from e
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR pickle {path} holds a {type(obj).__name__}, not a dict")
    return obj


def _batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = read_pickle(path)
    try:
        data = np.asarray(_key(d, "data"), dtype=np.uint8)
        labels = np.asarray(_key(d, label_key), dtype=np.int64)
    except KeyError as e:
        raise DataError(f"CIFAR pickle {path} has no {e} entry") from e
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DataError(
            f"CIFAR pickle {path}: data {data.shape} and {labels.shape[0]} labels do not match "
            "the N x 3072 layout"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _names(path: Path, key: str) -> list[str]:
    d = read_pickle(path)
    try:
        names = _key(d, key)
    except KeyError as e:
        raise DataError(f"CIFAR meta file {path} has no {e} entry") from e
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def load_cifar10_pickle(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N x 3 x 32 x 32 uint8), labels and class names from cifar-10-batches-py."""
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_batch(folder / f, "labels") for f in files]
    classes = _names(folder / "batches.meta", "label_names")
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            classes)


def load_cifar100_pickle(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, fine labels (0..99) and fine class names from cifar-100-python."""
    images, labels = _batch(folder / ("train" if split == "train" else "test"), "fine_labels")
    classes = _names(folder / "meta", "fine_label_names")
    return images, labels, classes

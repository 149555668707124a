"""Decode-once cache: uint8 arrays saved as .npz, keyed by source paths, sizes and mtimes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .paths import cache_dir

CACHE_VERSION = 1

Arrays = tuple[np.ndarray, np.ndarray, list[str]]


def fingerprint(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size, mtime in ns) for each source file: the cache key's data part."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    return out


def cache_key(kind: str, sources: Iterable[Path], params: dict[str, object]) -> str:
    """A hex digest naming one decoded result of `kind` from `sources` with `params`."""
    blob = json.dumps(
        {"v": CACHE_VERSION, "kind": kind, "params": params, "src": fingerprint(sources)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_path(kind: str, sources: Iterable[Path], params: dict[str, object]) -> Path:
    """Where the cached arrays for this (kind, sources, params) live."""
    return cache_dir() / "decoded" / f"{kind}-{cache_key(kind, sources, params)}.npz"


def _load(path: Path) -> Arrays:
    with np.load(path, allow_pickle=False) as z:
        return z["images"], z["labels"], [str(c) for c in z["classes"]]


def _save(path: Path, arrays: Arrays) -> None:
    images, labels, classes = arrays
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, classes=np.array(classes, dtype=str))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_arrays(
    kind: str,
    sources: Iterable[Path],
    params: dict[str, object],
    build: Callable[[], Arrays],
    enabled: bool = True,
) -> Arrays:
    """Return (images, labels, classes) from the cache, or build them, save them and return them."""
    if not enabled:
        return build()
    path = cache_path(kind, list(sources), params)
    if path.exists():
        try:
            return _load(path)
        except Exception as e:  # a corrupt cache entry is rebuilt, never trusted
            warnings.warn(f"ignoring unreadable cache {path}: {e}", stacklevel=2)
    arrays = build()
    try:
        _save(path, arrays)
    except OSError as e:  # a read-only cache must not stop loading
        warnings.warn(f"could not write cache {path}: {e}", stacklevel=2)
    return arrays

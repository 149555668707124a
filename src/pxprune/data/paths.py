"""Where datasets and decoded caches live by default."""

from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    """Data root: $PXPRUNE_DATA, else ../shared/data from the cwd when present, else the cache."""
    env = os.environ.get("PXPRUNE_DATA")
    if env:
        return Path(env).expanduser()
    shared = Path.cwd().parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path.home() / ".cache" / "pxprune" / "data"


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The given root as a Path, or the default one when None."""
    return default_root() if root is None else Path(root).expanduser()


def cache_dir() -> Path:
    """Folder for decoded-array caches: $PXPRUNE_CACHE, else ~/.cache/pxprune."""
    env = os.environ.get("PXPRUNE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pxprune"

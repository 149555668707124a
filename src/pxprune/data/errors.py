"""Errors raised by the data loaders."""

from __future__ import annotations

from ..errors import PxpruneError


class DataError(PxpruneError):
    """A dataset file is missing, corrupt, truncated or inconsistent; the message names the file."""


class DatasetNotFoundError(DataError):
    """A dataset could not be found under the data root (and was not downloaded)."""

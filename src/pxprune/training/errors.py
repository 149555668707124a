"""Errors raised by training: a bad recipe or precision, or a checkpoint that does not match."""

from __future__ import annotations

from ..errors import PxpruneError


class TrainingError(PxpruneError):
    """A recipe, precision or resume request the user can fix; the CLI prints it as one line."""

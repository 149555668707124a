"""PX's own errors and warnings, shared by the default scoring and the bound variant."""

from __future__ import annotations

from ...masks import PruningError


class PXNumericsError(PruningError):
    """A PX copy overflowed or produced NaN, or carries no signal: the scores would be
    meaningless."""


class PXPrecisionFallback(UserWarning):
    """Copy 1 of the bound variant in float32 did not match the float64 probe for a batch (or
    used an operation the rescaled copy cannot align) and was computed in float64 (slower,
    exact)."""

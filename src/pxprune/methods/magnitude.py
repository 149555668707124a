"""Magnitude: ``|theta|`` of the masked weights (Han et al. 2015; at init, Frankle et al. 2021)."""

from __future__ import annotations

from torch import Tensor, nn

from ..batches import Batch
from ..masks import Masks
from . import register
from ._common import masked_weights


@register("magnitude", needs_data=False, display_name="Magnitude", color="#8c564b")
def score(
    model: nn.Module, batches: list[Batch], masks: Masks, *, seed: int = 0
) -> dict[str, Tensor]:
    """``|mask * theta|`` per prunable weight: keep the largest weights.

    The "magnitude at initialization" baseline of Frankle et al. (ICLR 2021, "Pruning neural
    networks at initialization: why are we missing the mark?"); applied to trained weights it is
    the pruning step of IMP (see :mod:`pxprune.methods.imp`). No forward pass, no BatchNorm mode.
    """
    return {name: w.abs() for name, w in masked_weights(model, masks).items()}

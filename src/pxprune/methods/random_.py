"""Random: seeded uniform scores, the floor every pruning method must beat."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..batches import Batch
from ..masks import Masks
from . import register


@register("random", needs_data=False, display_name="Random", color="#7f7f7f")
def score(
    model: nn.Module, batches: list[Batch], masks: Masks, *, seed: int = 0
) -> dict[str, Tensor]:
    """Uniform [0, 1) scores from a CPU generator seeded with ``seed`` (device-independent).

    Random pruning at a global threshold keeps each layer at the target density in expectation
    (the "random" baseline of Tanaka et al. 2020 and Frankle et al. 2021). ``prune()`` passes
    ``seed + round``, so every round draws fresh scores. No forward pass, so no BatchNorm mode.
    """
    gen = torch.Generator().manual_seed(int(seed))
    params = dict(model.named_parameters())
    return {
        name: torch.rand(keep.shape, generator=gen, dtype=torch.float64).to(params[name].device)
        for name, keep in masks.items()
    }

"""SNIP: connection sensitivity ``|theta * dL/dtheta|`` (Lee, Ajanthan, Torr, ICLR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batches import Batch
from ..masks import Masks
from ..user_model import preserved_modes
from . import register
from ._common import cast_input, forward_with, masked_weights, set_bn_mode


def snip_gradients(
    model: nn.Module, batches: list[Batch], masks: Masks, bn_mode: str = "train"
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The masked weights ``w = mask*theta`` and ``dL/dw`` with L = sum over batches of mean CE."""
    weights = masked_weights(model, masks, requires_grad=True)
    names = list(weights)
    grads = {n: torch.zeros_like(w) for n, w in weights.items()}
    like = next(iter(weights.values()))
    with preserved_modes(model):
        set_bn_mode(model, bn_mode)
        for x, y in batches:
            out = forward_with(model, weights, cast_input(x, like))
            loss = F.cross_entropy(out, y.to(out.device))
            for n, g in zip(names, torch.autograd.grad(loss, [weights[n] for n in names],
                                                       allow_unused=True), strict=True):
                if g is not None:
                    grads[n] += g
    return {n: w.detach() for n, w in weights.items()}, grads


@register("snip", needs_data=True, needs_labels=True, display_name="SNIP", color="#ff7f0e")
def score(
    model: nn.Module, batches: list[Batch], masks: Masks, *, seed: int = 0, bn_mode: str = "train"
) -> dict[str, Tensor]:
    """SNIP saliency ``|w * dL/dw|`` with ``w = mask*theta``, cross-entropy summed over batches.

    For kept weights this equals ``|dL/dc|`` for a multiplicative mask ``c`` at 1, the paper's
    connection sensitivity (pruned weights score 0). The official code uses one batch and
    normalises the scores by their sum; we sum the per-batch mean losses over every batch given
    and skip the normalisation (it does not change the ranking). BatchNorm: ``bn_mode="train"``
    (default, as SNIP's and Synaptic-Flow's code prune in train mode) uses batch statistics and
    differentiates through them, on cloned buffers so the model's running statistics are left
    untouched; ``"eval"`` uses the running statistics. Other modules (dropout) run in eval mode.
    """
    weights, grads = snip_gradients(model, batches, masks, bn_mode)
    return {n: (weights[n] * grads[n]).abs() for n in weights}

"""Helpers shared by the baseline scores: masked weights, BatchNorm modes, functional forwards."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from ..masks import Masks, PruningError

BN_MODES = ("train", "eval")


def masked_weights(
    model: nn.Module, masks: Masks, dtype: torch.dtype | None = None, requires_grad: bool = False
) -> dict[str, Tensor]:
    """Detached ``mask * theta`` for every masked parameter (optionally fresh leaves with grad)."""
    params = dict(model.named_parameters())
    out = {}
    for name, keep in masks.items():
        if name not in params:
            raise PruningError(f"mask for {name!r} but the model has no such parameter")
        p = params[name].detach()
        w = p * keep.to(device=p.device, dtype=p.dtype)
        if dtype is not None:
            w = w.to(dtype)
        out[name] = w.clone().requires_grad_(requires_grad)
    return out


def set_bn_mode(model: nn.Module, bn_mode: str) -> None:
    """Everything in eval mode (no dropout), BatchNorm in ``bn_mode`` (train: batch statistics)."""
    if bn_mode not in BN_MODES:
        raise PruningError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    model.eval()
    if bn_mode == "train":
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.train()


def forward_with(model: nn.Module, weights: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """``model(x)`` with ``weights`` substituted and every buffer cloned, so that a train-mode
    BatchNorm updates the clones, never the model's running statistics."""
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return functional_call(model, {**buffers, **weights}, (x,), strict=False)


def cast_input(x: Tensor, like: Tensor) -> Tensor:
    """``x`` on ``like``'s device, floating inputs in ``like``'s dtype."""
    x = x.to(like.device)
    return x.to(like.dtype) if x.is_floating_point() else x


def shuffle_masks(masks: Mapping[str, Tensor], seed: int = 0) -> Masks:
    """A layer-wise random permutation of each mask (sanity-check baseline: same per-layer counts).

    Synaptic-Flow's ``shuffle`` rebinds a local variable and leaves the mask unchanged; this
    returns new tensors.
    """
    gen = torch.Generator().manual_seed(int(seed))
    out = {}
    for name, m in masks.items():
        flat = m.detach().cpu().flatten()
        perm = torch.randperm(flat.numel(), generator=gen)
        out[name] = flat[perm].view(m.shape)
    return Masks(out)

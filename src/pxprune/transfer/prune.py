"""Pruning a pre-trained backbone for a downstream task: scored on the task's class-balanced
pruning split, with a ridge probe of the dense features in the classifier by default."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..api import prune
from ..data import ImageDataset, sampling
from ..errors import PxpruneError
from ..masks import Masks
from .features import extract_features, prepare_inputs
from .head import classifier_module
from .probe import Probe, fit_probe, install_probe

HEAD_MODES = ("probe", "random")


def pruning_batch(
    data: ImageDataset | tuple[Tensor, Tensor], per_class: int = 10, seed: int = 0,
    size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(float inputs, labels) to score with: the seeded class-balanced pruning split."""
    if isinstance(data, ImageDataset):
        x, labels = sampling.pruning_batch(data, per_class, seed)
        return prepare_inputs(x, None, None, size), labels
    x, y = data
    return (prepare_inputs(x, None, None, size) if x.dtype != torch.uint8 else x), y


def prune_for_transfer(
    model: nn.Module,
    method: str,
    sparsity: float | str,
    pruning_data: ImageDataset | tuple[Tensor, Tensor],
    *,
    head: str = "probe",
    probe_data: ImageDataset | tuple[Tensor, Tensor] | None = None,
    probe: Probe | None = None,
    per_class: int = 10,
    rounds: int | None = None,
    scope: str = "global",
    seed: int = 0,
    size: int | None = None,
    l2: float | Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **options: object,
) -> Masks:
    """Prune a pre-trained backbone for a downstream task; apply and return the masks.

    Scoring uses the downstream task's class-balanced pruning split (``per_class`` per class of
    ``pruning_data``, seeded). The head in place while scoring (``head``):

    - ``"probe"`` (default): first fit a ridge probe on the *dense* features of ``probe_data``
      (default: ``pruning_data``; pass a precomputed ``probe`` to reuse one) and install it.
      The freshly replaced head is random, and every data-driven score reads the output through
      it: PX's copies keep the classifier's real weights, so its class weights ``sum_x z1_k(x)``
      and the per-class path mass are only meaningful if the classifier encodes the downstream
      classes; SNIP/GraSP's loss gradients likewise only carry the task through a sensible head.
    - ``"random"``: keep the fresh random head (what a naive transfer would score with).

    The classifier is pruned like any other layer; refit the probe afterwards with
    ``linear_probe(model, ..., masks=masks)`` so it respects the classifier's mask.
    """
    if head not in HEAD_MODES:
        raise PxpruneError(f"head must be one of {HEAD_MODES}, got {head!r}")
    model.to(device).eval()
    if head == "probe":
        if probe is None:
            pdata = pruning_data if probe_data is None else probe_data
            feats = extract_features(model, pdata, device=device, size=size)
            if feats[1] is None:
                raise PxpruneError("head='probe' needs labelled probe data")
            probe = fit_probe(feats[0], feats[1], l2, seed=seed,
                              num_classes=classifier_module(model).out_features)
        install_probe(model, probe.weight, probe.bias)
    x, y = pruning_batch(pruning_data, per_class, seed, size)
    return prune(model, method, sparsity, (x.to(device), y.to(device)), rounds=rounds,
                 scope=scope, seed=seed, progress=progress, **options)


__all__ = ["HEAD_MODES", "prune_for_transfer", "pruning_batch"]

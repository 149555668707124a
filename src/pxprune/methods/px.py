"""PX — Path eXclusion (Iurada, Ciccone, Tommasi, CVPR 2024), as specified in DESIGN.md §3.

The NTK trace of a bias-free ReLU network is bounded by ``||J_v^f||_F^2 ||J_theta^v||_F^2``
(path view of Gebhart et al. 2021). PX scores each weight by its share of the per-output bound

    R = sum_k Z1_k * z2_k,      Z1 = sum_x z1(x),      S_j = theta_j^2 dR/d(theta_j^2)

- copy 1 (``z1``, no gradient): prunable hidden weights replaced by their 0/1 mask, input ``x**2``,
  every ReLU/max-pool replaying the real network's on/off pattern and arg-max (eval mode),
  BatchNorm scale 1, no biases;
- copy 2 (``z2``, the only backward): hidden weights ``(mask*theta)**2``, ReLU the identity,
  max-pool as average pooling, BatchNorm as ``s**2`` with ``s = gamma/sqrt(var+eps)``, no biases,
  input all ones, batch of one.
- The classifier (the last Conv/Linear the forward calls) keeps its real masked weights in both
  copies, as the authors' final code does; its score is ``theta dR/dtheta``. With an all-ones
  classifier (``classifier="ones"``) every class weight ``Z1_k`` is equal and PX ranks exactly
  like SynFlow-L2, free of data.

Differences from the official code, and why: both copies use eval-mode BatchNorm (in the official
code copy 2 runs with batch statistics on an all-ones input, which zeroes every gradient, so its
scores are rounding noise); BatchNorm layers are found by what they compute, not by a "bn" name
substring; all-ones weights make copy 1 grow like fan_in**depth (about 1e40 for ResNet-20,
beyond float32), so copy 1 is rescaled or run in float64, with a clear error on overflow.

Precision: ``precision="float32"`` (default) runs copy 1, the only pass over the data, in
float32 with its input scaled by a power of two (exact) that puts its outputs near 2**64; copy 2,
``R`` and the gradient stay float64. Copy 1 sums non-negative terms up to the classifier, so
float32 loses no ranking: on ResNet-20 the scores of the top 2 % agree with all-float64 to 1e-7
relative (test_px_resnet), and the round is about 4x faster on CPU, where float64 convolutions
are slow. ``precision="float64"`` runs both copies in float64 (the reference, used by the
brute-force tests).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..batches import Batch
from ..intercept import (
    Gate,
    GateRecorder,
    PathActivationCopy,
    PathKernelCopy,
    Recording,
    weighted_modules,
)
from ..masks import Masks, PruningError
from . import register

PRECISIONS = ("float64", "float32")
CLASSIFIER_MODES = ("real", "ones")


class PXNumericsError(PruningError):
    """A PX copy overflowed or produced NaN: the scores would be meaningless."""


def find_classifier(model: nn.Module, x: Tensor, approximate_unsupported: bool = False) -> str:
    """Name of the weight of the last Conv/Linear the forward pass calls (the output layer).

    Call it with the model in eval mode: a train-mode forward would update BatchNorm statistics.
    """
    x = x.to(next(model.parameters()).dtype)
    with torch.no_grad(), GateRecorder(model, approximate_unsupported) as rec:
        model(x[:1])
    if not rec.recording.weighted_calls:
        raise PruningError("the model's forward pass calls no Conv/Linear layer")
    module = rec.recording.weighted_calls[-1]
    return f"{module}.weight" if module else "weight"


def _probe_scale(z1_probe: Tensor) -> float:
    """A power of two that brings copy 1's largest output near 2**64, safe for float32."""
    peak = float(z1_probe.abs().max())
    if not math.isfinite(peak) or peak == 0.0:
        return 1.0
    return 2.0 ** (64 - math.floor(math.log2(peak)))


def px_terms(
    model: nn.Module,
    batches: list[Batch],
    masks: Masks,
    *,
    classifier: str = "real",
    classifier_name: str | None = None,
    precision: str = "float32",
    approximate_unsupported: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The bound ``R`` and signed shares ``theta dR/dtheta`` (hidden: ``theta^2 dR/dtheta^2``)."""
    if classifier not in CLASSIFIER_MODES:
        raise PruningError(f"classifier must be one of {CLASSIFIER_MODES}, got {classifier!r}")
    if precision not in PRECISIONS:
        raise PruningError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    all_weights = weighted_modules(model)
    was_training = model.training
    model.eval()  # BatchNorm in eval mode everywhere: never batch statistics, never updated
    try:
        return _px_terms(model, batches, masks, all_weights, classifier == "real", classifier_name,
                         precision, approximate_unsupported)
    finally:
        model.train(was_training)


def _copy_weights(all_weights, masks, classifier_name, real_classifier, device):
    """Weights of copy 1 and copy 2 keyed by ``id(parameter)``, and copy 2's gradient leaves."""
    f64 = torch.float64
    copy1: dict[int, Tensor] = {}
    copy2: dict[int, Tensor] = {}
    leaves: dict[str, Tensor] = {}
    for name, w in all_weights.items():
        keep = masks[name].to(device) if name in masks else torch.ones_like(w, dtype=torch.bool)
        masked = w.detach().to(f64) * keep.to(f64)
        if name == classifier_name and real_classifier:
            copy1[id(w)] = masked
            value = masked.clone()
        else:
            copy1[id(w)] = keep.to(f64)
            value = masked.square()
        if name in masks:
            value.requires_grad_(True)
            leaves[name] = value
        copy2[id(w)] = value
    return copy1, copy2, leaves


@torch.no_grad()
def path_activation_sum(model, batches, copy1, precision, approximate_unsupported) -> Tensor:
    """``Z1 = sum_x z1(x)`` in float64: gates recorded on the real network, replayed on ``x**2``."""
    f64 = torch.float64
    model_dtype = next(model.parameters()).dtype
    copy1_low = {k: v.float() for k, v in copy1.items()} if precision == "float32" else copy1
    z1_sum: Tensor | None = None
    for x, _ in batches:
        with GateRecorder(model, approximate_unsupported) as rec:
            model(x.to(model_dtype))
        squared = x.to(f64).square()
        scale = 1.0
        if precision == "float32":  # copy 1 is linear in its input: rescale into float32's range
            with PathActivationCopy(model, copy1, _first(rec.recording),
                                    approximate_unsupported=approximate_unsupported):
                scale = _probe_scale(model(squared[:1]))
            squared = (squared * scale).float()
        with PathActivationCopy(model, copy1_low, rec.recording,
                                approximate_unsupported=approximate_unsupported):
            z1 = model(squared).to(f64) / scale
        if not torch.isfinite(z1).all():
            raise PXNumericsError(
                f"PX copy 1 overflowed {precision} (all-ones weights grow like fan_in**depth); "
                "use precision='float64' or a shallower model"
            )
        part = z1.sum(0)
        z1_sum = part if z1_sum is None else z1_sum + part
    return z1_sum


def _px_terms(model, batches, masks, all_weights, real_classifier, classifier_name, precision,
              approximate_unsupported):
    device = next(iter(all_weights.values())).device
    if classifier_name is None:
        classifier_name = find_classifier(model, batches[0][0], approximate_unsupported)
    if classifier_name not in all_weights:
        raise PruningError(f"classifier {classifier_name!r} is not a Conv/Linear weight")
    copy1, copy2, leaves = _copy_weights(all_weights, masks, classifier_name, real_classifier,
                                         device)
    z1_sum = path_activation_sum(model, batches, copy1, precision, approximate_unsupported)
    ones = torch.ones((1, *batches[0][0].shape[1:]), dtype=torch.float64, device=device)
    with PathKernelCopy(model, copy2, bn_power=2, maxpool_as="avg",
                        approximate_unsupported=approximate_unsupported):
        z2 = model(ones)
    R = (z1_sum * z2[0]).sum()
    if not torch.isfinite(R) or R.item() == 0.0:
        raise PXNumericsError(f"PX bound R = {R.item()}: the copies carry no signal")
    names = list(leaves)
    grads = torch.autograd.grad(R, [leaves[n] for n in names], allow_unused=True)
    shares = {}
    for name, g in zip(names, grads, strict=False):
        value = leaves[name].detach()
        shares[name] = value * g if g is not None else torch.zeros_like(value)
        if not torch.isfinite(shares[name]).all():
            raise PXNumericsError(f"PX scores of {name!r} are not finite")
    return R.detach(), shares


def _first(recording: Recording) -> Recording:
    """The recording restricted to the first example (for the float32 scale probe)."""
    gates = [
        Gate(g.kind, None if g.mask is None else g.mask[:1], g.negative,
             None if g.indices is None else g.indices[:1])
        for g in recording.gates
    ]
    return Recording(gates, recording.weighted_calls)


@register("px", needs_data=True, default_rounds=100)
def score(
    model: nn.Module,
    batches: list[Batch],
    masks: Masks,
    *,
    seed: int = 0,
    classifier: str = "real",
    classifier_name: str | None = None,
    precision: str = "float32",
    approximate_unsupported: bool = False,
) -> dict[str, Tensor]:
    """PX saliency ``|theta^2 dR/dtheta^2|`` (classifier ``|theta dR/dtheta|``) per weight."""
    _, shares = px_terms(
        model, batches, masks, classifier=classifier, classifier_name=classifier_name,
        precision=precision, approximate_unsupported=approximate_unsupported,
    )
    return {name: s.abs() for name, s in shares.items()}

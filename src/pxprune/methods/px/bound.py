"""PX's bound variant (``variant="bound"``; the default is :mod:`.cvpr2024`): the NTK-trace upper
bound of docs/px.md §2 written out exactly.

The NTK trace of a bias-free ReLU network is bounded by ``||J_v^f||_F^2 ||J_theta^v||_F^2``
(path view of Gebhart et al. 2021). It scores each weight by its share of the per-output bound

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
are slow. Deeper networks (ResNet-56: 2**370, EfficientNet-Lite0, ResNet-50) outgrow float32's
range even with one input scale: they run as a rescaled copy that renormalises every conv/linear
output by a power of two and carries the exponent with the tensor (exact; ResNet-56's top 2 %
match float64, test_px_rescaled). Each batch is checked against a float64 probe of its first
example and recomputed in float64 (with a ``PXPrecisionFallback`` warning) when the float32
result does not match. ``precision="float64"`` runs both copies in float64 (the reference,
used by the brute-force tests).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from ...batches import Batch
from ...errors import PruningError, PXNumericsError
from ...masks import Masks
from ...numerics import first_nonfinite
from ...pathview import (
    Gate,
    GateRecorder,
    PathActivationCopy,
    PathKernelCopy,
    RangeError,
    Recording,
    RescaledPathActivationCopy,
    tensor_exponent,
    weighted_modules,
    with_exponent,
)
from ...user_model import eval_mode
from .options import check_px_options


class PXPrecisionFallback(UserWarning):
    """Copy 1 of the bound variant in float32 did not match the float64 probe for a batch (or
    used an operation the rescaled copy cannot align) and was computed in float64 (slower,
    exact)."""


def find_classifier(model: nn.Module, x: Tensor, approximate_unsupported: bool = False) -> str:
    """Name of the weight of the last Conv/Linear the forward pass calls (the output layer).

    Call it with the model in eval mode: a train-mode forward would update BatchNorm statistics.
    """
    return _classifier_of(record_gates(model, x[:1], approximate_unsupported))


def record_gates(model: nn.Module, x: Tensor, approximate_unsupported: bool = False,
                 bn: str = "running") -> Recording:
    """The real network's ReLU patterns, max-pool choices and conv/linear calls on ``x``
    (``bn="batch"``: BatchNorm with the batch's statistics, whose variances are recorded)."""
    with torch.no_grad(), GateRecorder(model, approximate_unsupported, bn=bn) as rec:
        model(x.to(next(model.parameters()).dtype))
    return rec.recording


def _classifier_of(recording: Recording) -> str:
    """The weight name of the last Conv/Linear call in ``recording``."""
    if not recording.weighted_calls:
        raise PruningError("the model's forward pass calls no Conv/Linear layer")
    module = recording.weighted_calls[-1]
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
    bn: str = "running",
) -> tuple[Tensor, dict[str, Tensor]]:
    """The bound ``R`` and signed shares ``theta dR/dtheta`` (hidden: ``theta^2 dR/dtheta^2``).

    ``bn`` says where BatchNorm's scale ``s = gamma/sqrt(var+eps)`` (``s**2`` in copy 2) takes
    ``var`` from: ``"running"`` the running statistics; ``"batch"`` a no-grad forward of the
    real masked network on the pruning data with batch statistics (running statistics untouched),
    the same forward that records the gates; over several batches, the batch variances are
    averaged with the batch sizes as weights.
    """
    check_px_options({"variant": "bound", "bn": bn, "classifier": classifier,
                      "precision": precision})
    all_weights = weighted_modules(model)
    # BatchNorm in eval mode everywhere: never batch statistics, never updated; each module
    # gets its own flag back (a model in mixed modes stays mixed)
    with eval_mode(model):
        return _px_terms(model, batches, masks, all_weights, classifier == "real", classifier_name,
                         precision, approximate_unsupported, bn)


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


# float32 spans about 2**-126 .. 2**128. Copy 1 grows like fan_in**depth (ResNet-20: about
# 2**133 from input to output), so it fits once its input is scaled by a power of two; deeper
# networks (ResNet-56) do not, and run as the rescaled copy (per-layer powers of two) instead.
FLOAT32_INPUT_FLOOR = 2.0**-100  # the scaled input's peak must stay this far above subnormals
PROBE_TOLERANCE = 1e-5  # float32 vs the float64 probe on the first example, relative to its peak


def _copy1_float32(model, copy1, copy1_low, recording, squared, approximate_unsupported):
    """Copy 1 in float32, checked against a float64 probe of the first example; None where
    the float32 result does not match it.

    A network whose range fits float32 (ResNet-20: about 2**133) runs with one power-of-two
    input scale; a deeper one (ResNet-56, EfficientNet-Lite0, ResNet-50) runs as
    :class:`RescaledPathActivationCopy`, which renormalises every conv/linear output by a
    power of two (one extra max-reduction per layer, still about 4x faster than float64 on CPU).
    """
    with PathActivationCopy(model, copy1, _first(recording),
                            approximate_unsupported=approximate_unsupported):
        probe = model(squared[:1])
    scale = _probe_scale(probe)
    scaled = squared * scale
    try:
        if math.isfinite(scale) and float(scaled.max()) >= FLOAT32_INPUT_FLOOR:
            with PathActivationCopy(model, copy1_low, recording,
                                    approximate_unsupported=approximate_unsupported):
                z1 = model(scaled.float()).to(torch.float64) / scale
        else:
            z1 = _copy1_rescaled(model, copy1_low, recording, squared, approximate_unsupported)
    except RangeError:
        return None
    peak = float(probe.abs().max())
    if not torch.isfinite(z1).all() or float((z1[:1] - probe).abs().max()) > PROBE_TOLERANCE * peak:
        return None
    return z1


def _copy1_rescaled(model, copy1_low, recording, squared, approximate_unsupported) -> Tensor:
    """Copy 1 in float32 with per-layer power-of-two renormalisation, returned in float64."""
    peak = float(squared.max())
    shift = math.frexp(peak)[1] if peak > 0 else 0
    x = with_exponent((squared * 2.0**-shift).float(), shift)
    with RescaledPathActivationCopy(model, copy1_low, recording,
                                    approximate_unsupported=approximate_unsupported):
        z = model(x)
    exponent = tensor_exponent(z)
    if exponent is None:
        raise RangeError("the rescaled copy lost track of its output's scale")
    power = torch.tensor(float(exponent), dtype=torch.float64, device=z.device)
    return torch.ldexp(z.to(torch.float64), power)  # inf (caught later) where float64 overflows


@torch.no_grad()
def path_activation_sum(model, batches, copy1, precision, approximate_unsupported,
                        first_recording: Recording | None = None, bn: str = "running",
                        recordings: list[tuple[Recording, int]] | None = None) -> Tensor:
    """``Z1 = sum_x z1(x)`` in float64: gates recorded on the real network, replayed on ``x**2``.

    With ``precision="float32"`` each batch runs in float32 where that is provably close (see
    :func:`_copy1_float32`) and falls back to float64 (with a PXPrecisionFallback warning)
    where it is not. ``first_recording``, when given, is the first batch's recording (saves
    one forward when the caller already recorded it). Each batch's recording and size are
    appended to ``recordings`` when it is given."""
    f64 = torch.float64
    copy1_low = {k: v.float() for k, v in copy1.items()} if precision == "float32" else copy1
    z1_sum: Tensor | None = None
    for i, (x, _) in enumerate(batches):
        recording = first_recording if i == 0 and first_recording is not None else (
            record_gates(model, x, approximate_unsupported, bn))
        if recordings is not None:
            recordings.append((recording, x.shape[0]))
        squared = x.to(f64).square()
        z1 = None
        if precision == "float32":
            z1 = _copy1_float32(model, copy1, copy1_low, recording, squared,
                                approximate_unsupported)
            if z1 is None:
                warnings.warn("PX copy 1 in float32 did not match its float64 probe on this "
                              "network (or used an operation the rescaled copy cannot align): "
                              "computing it in float64 (pass precision='float64' to skip the "
                              "float32 try)",
                              PXPrecisionFallback, stacklevel=2)
        if z1 is None:
            with PathActivationCopy(model, copy1, recording,
                                    approximate_unsupported=approximate_unsupported):
                z1 = model(squared)
        if not torch.isfinite(z1).all():
            raise PXNumericsError(
                "PX copy 1 overflowed float64 (all-ones weights grow like fan_in**depth): "
                "the network is too deep for PX's path-activation copy"
            )
        part = z1.sum(0)
        z1_sum = part if z1_sum is None else z1_sum + part
    return z1_sum


def _px_terms(model, batches, masks, all_weights, real_classifier, classifier_name, precision,
              approximate_unsupported, bn="running"):
    device = next(iter(all_weights.values())).device
    # the first batch's gates also name the classifier (the last Conv/Linear called)
    first = record_gates(model, batches[0][0], approximate_unsupported, bn)
    if classifier_name is None:
        classifier_name = _classifier_of(first)
    if classifier_name not in all_weights:
        raise PruningError(f"classifier {classifier_name!r} is not a Conv/Linear weight")
    copy1, copy2, leaves = _copy_weights(all_weights, masks, classifier_name, real_classifier,
                                         device)
    recordings: list[tuple[Recording, int]] = []
    z1_sum = path_activation_sum(model, batches, copy1, precision, approximate_unsupported,
                                 first_recording=first, bn=bn, recordings=recordings)
    ones = torch.ones((1, *batches[0][0].shape[1:]), dtype=torch.float64, device=device)
    with PathKernelCopy(model, copy2, bn_power=2, maxpool_as="avg",
                        bn_vars=_pooled_variances(recordings) if bn == "batch" else None,
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
    bad = first_nonfinite(shares.items())  # one device sync for all layers
    if bad is not None:
        raise PXNumericsError(f"PX scores of {bad!r} are not finite")
    return R.detach(), shares


def _first(recording: Recording) -> Recording:
    """The recording restricted to the first example (for the float32 scale probe)."""
    gates = [
        Gate(g.kind, None if g.mask is None else g.mask[:1], g.negative,
             None if g.indices is None else g.indices[:1])
        for g in recording.gates
    ]
    return Recording(gates, recording.weighted_calls, recording.bn_vars)


def _pooled_variances(recordings: list[tuple[Recording, int]]) -> list[Tensor]:
    """Each BatchNorm's batch variance averaged over the batches, weighted by their sizes."""
    total = sum(n for _, n in recordings)
    first = recordings[0][0].bn_vars
    return [sum(rec.bn_vars[i] * n for rec, n in recordings) / total for i in range(len(first))]



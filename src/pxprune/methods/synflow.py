"""SynFlow (Tanaka, Kunin, Yamins, Ganguli, NeurIPS 2020) and its L2 variant SynFlow-L2."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..batches import Batch
from ..masks import Masks, PruningError
from ..pathview import PathKernelCopy, weighted_modules
from ..user_model import preserved_modes
from . import register


def _input_shape(batches: list[Batch], input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    if batches:
        return tuple(batches[0][0].shape[1:])
    raise PruningError("SynFlow is data-free but needs the input shape: pass data (only its shape "
                       "is used) or input_shape=(C, H, W)")


def synflow_terms(
    model: nn.Module,
    batches: list[Batch],
    masks: Masks,
    *,
    power: int = 1,
    maxpool_as: str = "max",
    input_shape: Sequence[int] | None = None,
    approximate_unsupported: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``R = sum f(1; v)`` of the linearised net, ``v = |w|**power``, and the shares ``v dR/dv``.

    ``w = mask*theta`` for masked weights, ``theta`` for other Conv/Linear weights; BatchNorm is
    the per-channel scale ``|gamma/sqrt(var+eps)|**power`` (eval-mode statistics), ReLUs are the
    identity, biases and BatchNorm shifts are dropped; float64 throughout.
    """
    shape = _input_shape(batches, input_shape)
    all_weights = weighted_modules(model)
    missing = [n for n in masks if n not in all_weights]
    if missing:
        raise PruningError(f"SynFlow can only score Conv/Linear weights, not {missing}")
    values: dict[int, Tensor] = {}
    leaves: dict[str, Tensor] = {}
    for name, w in all_weights.items():
        v = w.detach().to(torch.float64)
        if name in masks:
            v = v * masks[name].to(device=v.device, dtype=v.dtype)
        v = v.abs() ** power
        if name in masks:
            v.requires_grad_(True)
            leaves[name] = v
        values[id(w)] = v
    device = next(iter(all_weights.values())).device
    ones = torch.ones((1, *shape), dtype=torch.float64, device=device)
    with preserved_modes(model):
        model.eval()
        with PathKernelCopy(model, values, bn_power=power, maxpool_as=maxpool_as,
                            approximate_unsupported=approximate_unsupported):
            R = model(ones).sum()
    if not torch.isfinite(R):
        raise PruningError(f"SynFlow objective R = {R.item()} overflowed float64")
    names = list(leaves)
    grads = torch.autograd.grad(R, [leaves[n] for n in names], allow_unused=True)
    shares = {}
    for name, g in zip(names, grads, strict=True):
        v = leaves[name].detach()
        shares[name] = v * g if g is not None else torch.zeros_like(v)
    return R.detach(), shares


@register("synflow", needs_data=False, default_rounds=100, display_name="SynFlow",
          color="#9467bd")
def score(
    model: nn.Module,
    batches: list[Batch],
    masks: Masks,
    *,
    seed: int = 0,
    maxpool_as: str = "max",
    input_shape: Sequence[int] | None = None,
    approximate_unsupported: bool = False,
) -> dict[str, Tensor]:
    """SynFlow's synaptic saliency ``|theta dR/dtheta|``, ``R = 1^T f(1; |theta|)``, data-free.

    The data (if given) set only the input shape; otherwise pass ``input_shape``. 100 rounds by
    default, as in the paper. Differences from the authors' code: biases and BatchNorm shifts
    are dropped (the authors take ``|.|`` of every state-dict entry, biases, BN means and
    shifts included), so the network is exactly a sum over paths and the per-layer conservation
    law holds exactly in a chain network; float64 (theirs float32). Max-pooling stays a max
    (``maxpool_as="max"``, as in the authors' linearised model; ``"avg"`` also possible).
    BatchNorm: eval mode, folded into the scale ``|gamma/sqrt(running_var+eps)|`` (the authors
    also score in eval mode); running statistics are never updated.
    """
    _, shares = synflow_terms(model, batches, masks, power=1, maxpool_as=maxpool_as,
                              input_shape=input_shape,
                              approximate_unsupported=approximate_unsupported)
    return {n: s.abs() for n, s in shares.items()}


@register("synflow_l2", needs_data=False, default_rounds=100, display_name="SynFlow-L2",
          color="#17becf")
def score_l2(
    model: nn.Module,
    batches: list[Batch],
    masks: Masks,
    *,
    seed: int = 0,
    maxpool_as: str = "avg",
    input_shape: Sequence[int] | None = None,
    approximate_unsupported: bool = False,
) -> dict[str, Tensor]:
    """SynFlow-L2: ``theta^2 dR/d(theta^2)``, ``R = 1^T f(1; theta^2)``: PX's copy 2 on its own.

    Weights squared, BatchNorm scale squared, max-pool as average pooling (as PX copy 2), eval
    mode BatchNorm, float64, 100 rounds. The L2 variant appears in Gebhart et al. 2021 (path
    kernel) and in the PX paper; with an all-ones classifier PX ranks exactly like it.
    """
    _, shares = synflow_terms(model, batches, masks, power=2, maxpool_as=maxpool_as,
                              input_shape=input_shape,
                              approximate_unsupported=approximate_unsupported)
    return {n: s.abs() for n, s in shares.items()}

"""GraSP: preserve gradient flow, ``S = -theta * (H g)`` (Wang, Zhang, Grosse, ICLR 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..batches import Batch
from ..masks import Masks
from ..user_model import preserved_modes
from . import register
from ._common import cast_input, forward_with, masked_weights, set_bn_mode

TEMPERATURE = 200.0


class TwiceDifferentiable(TorchFunctionMode):
    """Activations whose backward torch cannot differentiate again, computed by an equal
    formula that it can: ``hardsigmoid(x) = relu6(x + 3) / 6`` (same values, same gradient,
    zero at the kinks as well), so GraSP's Hessian-gradient product reaches MobileNet-style
    Hardswish / squeeze-excite networks."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in ("hardsigmoid", "hardsigmoid_"):
            x = args[0]
            value = F.relu6(x + 3.0) / 6.0
            inplace = func.__name__ == "hardsigmoid_" or kwargs.get("inplace") or (
                len(args) > 1 and args[1])
            return x.copy_(value) if inplace else value
        return func(*args, **kwargs)


def _loss(model: nn.Module, weights: dict[str, Tensor], x: Tensor, y: Tensor, temperature: float):
    out = forward_with(model, weights, cast_input(x, next(iter(weights.values()))))
    return F.cross_entropy(out / temperature, y.to(out.device))


def grasp_terms(
    model: nn.Module,
    batches: list[Batch],
    masks: Masks,
    temperature: float = TEMPERATURE,
    bn_mode: str = "train",
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Masked weights ``w``, the data gradient ``g`` and the Hessian-gradient product ``H g``.

    ``L = sum over batches of CE(logits / temperature)``; ``g = mask * dL/dw`` (the gradient of
    the masked network, whose parameters are the live weights) is computed without a graph,
    then ``H g = d(g . dL/dw)/dw`` by double backward, batch by batch.
    """
    weights = masked_weights(model, masks, requires_grad=True)
    names = list(weights)
    leaves = [weights[n] for n in names]
    g0 = [torch.zeros_like(w) for w in leaves]
    hg = [torch.zeros_like(w) for w in leaves]
    with preserved_modes(model), TwiceDifferentiable():
        set_bn_mode(model, bn_mode)
        for x, y in batches:
            grads = torch.autograd.grad(_loss(model, weights, x, y, temperature), leaves,
                                        allow_unused=True)
            for acc, g in zip(g0, grads, strict=True):
                if g is not None:
                    acc += g
        # g of the masked network: only live weights are parameters of it
        g0 = [g * masks[n].to(device=g.device, dtype=g.dtype) for n, g in zip(names, g0,
                                                                              strict=True)]
        for x, y in batches:
            grads = torch.autograd.grad(_loss(model, weights, x, y, temperature), leaves,
                                        create_graph=True, allow_unused=True)
            z = sum((g * s).sum() for g, s in zip(grads, g0, strict=True) if g is not None)
            if not isinstance(z, Tensor) or not z.requires_grad:
                continue  # the loss does not depend on the weights twice (e.g. a linear model)
            for acc, h in zip(hg, torch.autograd.grad(z, leaves, allow_unused=True), strict=True):
                if h is not None:
                    acc += h
    return ({n: w.detach() for n, w in weights.items()}, dict(zip(names, g0, strict=True)),
            dict(zip(names, hg, strict=True)))


@register("grasp", needs_data=True, needs_labels=True, display_name="GraSP", color="#2ca02c")
def score(
    model: nn.Module,
    batches: list[Batch],
    masks: Masks,
    *,
    seed: int = 0,
    temperature: float = TEMPERATURE,
    bn_mode: str = "train",
) -> dict[str, Tensor]:
    """Keep-highest GraSP scores: ``theta * Hg`` shifted by one global constant to be >= 0.

    GraSP's saliency is ``S = -theta * Hg`` and GraSP *removes* the weights with the highest S
    (official code: ``keep = S <= threshold``), i.e. it keeps the lowest S = the highest
    ``theta * Hg``. Because ``pxprune`` keeps the highest score, we return ``theta * Hg - min``,
    where ``min`` is the smallest value over all masked tensors: one constant for all layers, so
    both the global and the per-layer ordering are exactly those of ``theta * Hg``. Only the
    ordering is meaningful (scores are not proportional to anything). Logits are divided by
    ``temperature`` = 200 as in the official code; the official normalisation by
    ``|sum S|`` is skipped (a positive constant). BatchNorm: ``bn_mode="train"`` by default, as
    the official code (batch statistics, differentiated through, on cloned buffers so running
    statistics are untouched); ``"eval"`` uses running statistics. Dropout etc. in eval mode.
    """
    weights, _, hg = grasp_terms(model, batches, masks, temperature, bn_mode)
    raw = {n: (weights[n] * hg[n]).to(torch.float64) for n in weights}  # exact shift
    low = min(float(r.min()) for r in raw.values())
    return {n: r - low for n, r in raw.items()}

"""NTK-SAP: NTK-spectrum-aware pruning (Wang, Li, Sun, ICLR 2023), random inputs and weights."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from ..batches import Batch
from ..masks import Masks, PruningError
from . import register

EPSILON = 0.01  # official code's --ntksap_epsilon default
REPEATS = 1  # official code's --ntksap_R default (its CIFAR-10 script uses 5)
ROUNDS = 20  # official script's --prune-epochs (T) for the multi-round schedule

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@torch.no_grad()
def _reinit(model: nn.Module, gen: torch.Generator) -> None:
    """Fresh weights as the authors' ``_initialize_weights``: Kaiming-normal (fan-in, ReLU gain)
    for Conv/Linear, zero biases, BatchNorm weight 1 and bias 0. Drawn on the CPU generator."""
    for m in model.modules():
        if isinstance(m, _WEIGHTED):
            w = torch.empty(m.weight.shape, dtype=torch.float32)
            nn.init.kaiming_normal_(w, generator=gen)
            m.weight.copy_(w)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, _BatchNorm) and m.affine:
            m.weight.fill_(1.0)
            m.bias.zero_()


def _randn(shape: torch.Size, gen: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=gen).to(device=like.device, dtype=like.dtype)


@register("ntksap", needs_data=True, default_rounds=ROUNDS, display_name="NTK-SAP",
          color="#1f77b4")
def score(
    model: nn.Module,
    batches: list[Batch],
    masks: Masks,
    *,
    seed: int = 0,
    epsilon: float = EPSILON,
    repeats: int = REPEATS,
    reinit: bool = True,
) -> dict[str, Tensor]:
    """NTK-SAP saliency ``|d/dm sum_x ||f(x; theta*m) - f(x; (theta + eps*delta)*m)||^2|``.

    The finite difference of the output under a random weight perturbation estimates the
    NTK trace (the spectrum's sum) of the masked network; its mask gradient scores each weight.
    For each of ``repeats`` repeats and each batch: fresh random weights ``theta`` (Kaiming
    normal; ``reinit=False`` keeps the model's own), a fresh perturbation ``delta ~ N(0, 1)``
    of the masked weights, and Gaussian inputs of the batch's shape (the data set only the
    shape and batch size). Scores accumulate over repeats and batches; pruned weights score 0.
    Everything is drawn from one CPU generator seeded with ``seed``, so scores are reproducible
    on any device. Defaults as the official code: ``epsilon=0.01``, ``repeats=1`` (its CIFAR-10
    script uses 5), 20 rounds (its ``--prune-epochs``).

    Differences from the authors' code: the official code re-draws the weights *in place* on the
    user's model and never restores them (the model then trains from another init); here the
    draws happen on a private deep copy and the user's model is never written. Only the masked
    weights are perturbed (the authors' perturbed copy also keeps the first draw's unmasked
    parameters). BatchNorm: as the authors, the running statistics of the copy are reset and set
    to the batch statistics of the unperturbed network on the random input (a train-mode pass
    with momentum 1, no gradient), then both networks run in eval mode with those statistics.
    """
    if repeats < 1:
        raise PruningError(f"repeats must be >= 1, got {repeats}")
    gen = torch.Generator().manual_seed(int(seed))
    scratch = copy.deepcopy(model)  # the user's model is never written
    for p in scratch.parameters():
        p.requires_grad_(False)
    bns = [m for m in scratch.modules() if isinstance(m, _BatchNorm)]
    for m in bns:
        m.momentum = 1.0
    params = dict(scratch.named_parameters())
    missing = [n for n in masks if n not in params]
    if missing:
        raise PruningError(f"masks for parameters the model does not have: {missing}")
    names = list(masks)
    like = params[names[0]]
    leaves = {n: masks[n].to(device=params[n].device, dtype=params[n].dtype).requires_grad_(True)
              for n in names}
    total = {n: torch.zeros_like(leaves[n]) for n in names}
    for _ in range(int(repeats)):
        for x, _ in batches:
            if reinit:
                _reinit(scratch, gen)
            theta = {n: params[n].detach() for n in names}
            delta = {n: _randn(theta[n].shape, gen, theta[n]) for n in names}
            inputs = _randn(x.shape, gen, like)
            scratch.eval()
            for m in bns:
                m.reset_running_stats()
                m.train()
            with torch.no_grad():  # BatchNorm statistics of the unperturbed net on this input
                functional_call(scratch, {n: theta[n] * leaves[n] for n in names}, (inputs,),
                                strict=False)
            scratch.eval()
            out = functional_call(scratch, {n: theta[n] * leaves[n] for n in names}, (inputs,),
                                  strict=False)
            out_mod = functional_call(
                scratch, {n: (theta[n] + epsilon * delta[n]) * leaves[n] for n in names},
                (inputs,), strict=False)
            objective = (out - out_mod).flatten(1).square().sum()
            grads = torch.autograd.grad(objective, [leaves[n] for n in names], allow_unused=True)
            for n, g in zip(names, grads, strict=True):
                if g is not None:
                    total[n] += g
    return {n: (total[n] * masks[n].to(total[n].device)).abs() for n in names}

"""The recipe's optimiser and per-step learning-rate schedule, for both trainers.

The ordinary trainer steps them; the stacked trainer builds the same pair per cell and reads each
step's lr and momentum off it (:func:`epoch_schedule`), so the two cannot disagree on a schedule.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .recipes import Recipe

_SCHEDULE_WARNING = r"Detected call of `lr_scheduler\.step\(\)`"


def sgd_settings(recipe: Recipe) -> dict:
    """The SGD hyper-parameters of ``recipe`` (Nesterov only with momentum, as torch requires)."""
    return {"lr": recipe.lr, "momentum": recipe.momentum,
            "nesterov": recipe.nesterov and recipe.momentum > 0,
            "weight_decay": recipe.weight_decay}


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over all of ``model``'s parameters (weight decay on all of them)."""
    params = model.parameters()
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, **sgd_settings(recipe))
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step learning-rate scheduler for the recipe (stepped once after every batch).

    multistep: ``lr * gamma**(milestones passed)``, changing at epoch boundaries exactly like
    MultiStepLR stepped per epoch; cosine: half-cosine from lr to 0 over all steps; onecycle:
    torch's OneCycleLR with ``max_lr=lr`` (momentum cycled when the optimiser has one); constant.
    A linear warmup over ``warmup_epochs`` multiplies the non-onecycle schedules.
    """
    spe = max(int(steps_per_epoch), 1)
    total = recipe.epochs * spe
    if recipe.schedule == "onecycle":
        cycle = recipe.optimizer != "sgd" or recipe.momentum > 0
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=total, pct_start=recipe.onecycle_pct_start,
            cycle_momentum=cycle,
        )
    warm = recipe.warmup_epochs * spe

    def factor(step: int) -> float:
        if recipe.schedule == "multistep":
            f = recipe.gamma ** sum(step // spe >= m for m in recipe.milestones)
        elif recipe.schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        else:
            f = 1.0
        if warm > 0 and step < warm:
            f *= (step + 1) / warm
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, skips_allowed: bool) -> None:
    """Advance the lr schedule one step. With fp16, GradScaler skips the optimiser steps whose
    gradients overflowed and torch then warns that the schedule moved first; the schedule is
    meant to follow the batches, so that warning is silenced (fp16 only)."""
    if not skips_allowed:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SCHEDULE_WARNING, category=UserWarning)
        scheduler.step()


def epoch_schedule(optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler,
                   steps: int) -> tuple[list[float], list[float]]:
    """The lr and momentum of each of the next ``steps`` steps, read off an optimiser that is never
    stepped while its ``scheduler`` advances ``steps`` times (what the ordinary trainer's does
    over one epoch)."""
    lrs, moms = [], []
    group = optimizer.param_groups[0]
    with warnings.catch_warnings():  # the optimiser is never stepped: torch would warn
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step")
        for _ in range(steps):
            lrs.append(float(group["lr"]))
            moms.append(float(group.get("momentum", 0.0)))
            scheduler.step()
    return lrs, moms

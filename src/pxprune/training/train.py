"""Train a sparse model with its masks held fixed: recipes, AMP, checkpoint/resume, JSON-lines log.

:func:`train` is the one training loop (:mod:`.loop`) at K=1, driving the ordinary step engine
(:mod:`.module_engine`); the run folder is :class:`.cell.Cell`'s: ``checkpoint.pt`` (written
atomically after every epoch, removed at the end unless ``keep_checkpoint``), ``metrics.jsonl``
(one line per epoch), and, once finished, ``model.pt`` (final state_dict) and ``summary.json``.
Calling :func:`train` again on the same folder resumes after the last finished epoch, bitwise
identically on CPU, or, when ``summary.json`` exists, returns it without training.

Randomness: the data order and the crop/flip draws come from (seed, epoch, batch) streams (see
``pxprune.data.loader``); the global torch/numpy/python RNGs (dropout, say) are seeded from
``seed`` at the start and saved in / restored from every checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data.dataset import ImageDataset
from ..data.loader import iterate_batches, num_batches
from ..errors import TrainingError
from ..masks import Masks
from . import distributed as D
from .cell import (
    CHECKPOINT,
    Cell,
    Say,
    load_checkpoint,
    masks_fingerprint,
    read_finished,
    resumed_setting,
)
from .evaluate import evaluate
from .loop import train_cells
from .module_engine import ModuleEngine, Rezero
from .optim import make_optimizer, make_scheduler
from .precision import (
    channels_last_works,
    memory_format_name,
    precision_choice,
    resolve_channels_last,
)
from .recipes import RECIPES, Recipe, get_recipe, scale_milestones

__all__ = [
    "RECIPES",
    "Recipe",
    "evaluate",
    "get_recipe",
    "make_optimizer",
    "make_scheduler",
    "masks_fingerprint",
    "scale_milestones",
    "train",
    "train_one",
]


def train(
    model: nn.Module,
    masks: Masks | None,
    train_set: ImageDataset,
    test_set: ImageDataset | None,
    recipe: Recipe | str,
    *,
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], object] | None = print,
    callback: Callable[[dict], object] | None = None,
    keep_checkpoint: bool = False,
    sync_bn: bool = False,
) -> dict:
    """Train ``model`` in place with ``masks`` held fixed; return the run summary.

    - ``masks`` (None: dense) are attached: pruned weights are zeroed, their gradients are zeroed
      by hooks and the weights re-zeroed after every optimiser step, so they stay exactly 0
      through momentum, weight decay and Adam.
    - ``recipe``: a :class:`Recipe` or a preset name (see ``RECIPES``).
    - ``out_dir`` is the run folder: ``metrics.jsonl`` gets one line per epoch (epoch, lr at the
      epoch's first step, train_loss, train_acc, test_loss, test_acc, seconds, images_per_s),
      ``checkpoint.pt`` is rewritten atomically after every epoch, and at the end ``model.pt``
      and ``summary.json`` are written. If ``checkpoint.pt`` exists training continues after its
      epoch (same recipe, seed and masks required); if ``summary.json`` exists the run is
      finished: the final weights are loaded into ``model`` and the summary returned untrained.
    - ``device``: where to train; AMP (autocast + GradScaler) is used when it is CUDA and
      ``recipe.amp``. Under torchrun (process group initialised, see
      ``pxprune.training.distributed``)
      pass this rank's device: masks are broadcast from rank 0, the model wrapped in DDP
      (``sync_bn`` converts BatchNorm to SyncBatchNorm), each rank takes its slice of every
      global batch, BN running statistics are averaged over ranks after every epoch, metrics
      are all-reduced, and only rank 0 writes files.
    - ``seed`` drives data order, augmentation and the global RNGs during training (not the
      init, which the caller made).
    - ``callback(record)`` runs after each epoch's files are written (a hook for early stopping
      and tests: an exception it raises stops training; calling train() again resumes).

    A loss that turns NaN or infinite raises :class:`pxprune.errors.TrainingDivergedError`.
    """
    result = train_one(model, masks, train_set, test_set, recipe, out_dir=out_dir,
                       device=device, seed=seed, progress=progress, log=log,
                       callback=None if callback is None else lambda _i, r: callback(r),
                       keep_checkpoint=keep_checkpoint, sync_bn=sync_bn)
    if isinstance(result, Exception):
        raise result
    return result


def train_one(
    model: nn.Module, masks: Masks | None, train_set: ImageDataset,
    test_set: ImageDataset | None, recipe: Recipe | str, *, out_dir: str | os.PathLike,
    device: str | torch.device = "cpu", seed: int = 0, progress: bool = True,
    log: Callable[[str], object] | None = print,
    callback: Callable[[int, dict], object] | None = None, keep_checkpoint: bool = False,
    sync_bn: bool = False, extra: dict | None = None,
) -> dict | Exception:
    """:func:`train`, returning a divergence as the result instead of raising it (the stacked
    trainer's K=1 path); ``callback(0, record)``; ``extra`` goes into the summary."""
    out = Path(out_dir)
    device = torch.device(device)
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    main = D.get_rank() == 0
    say: Say = (log or (lambda _m: None)) if main else (lambda _m: None)
    done = read_finished(out, model, say)
    if done is not None:
        return done
    cell, engine, handle = _restore(model, masks, train_set, test_set, recipe, out, device,
                                    seed, sync_bn, say)
    try:
        return train_cells(engine, [cell], train_set, progress=progress, say=say,
                           callback=callback, keep_checkpoint=keep_checkpoint, extra=extra)[0]
    finally:
        if handle is not None:
            handle.remove()


def _restore(model: nn.Module, masks: Masks | None, train_set: ImageDataset,
             test_set: ImageDataset | None, recipe: Recipe, out: Path, device: torch.device,
             seed: int, sync_bn: bool, say: Say) -> tuple[Cell, ModuleEngine, object]:
    """The run's cell (resumed from its checkpoint, if any) and step engine: masks attached
    (and shared from rank 0), precision and memory format resolved, the model on ``device``."""
    world = D.get_world_size()
    main = D.get_rank() == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
    D.barrier()
    model.to(device)
    if world > 1:
        has_masks = D.broadcast_object(masks is not None)
        masks = D.broadcast_masks(masks) if has_masks else None
    handle = masks.attach(model) if masks is not None else None  # zero now + gradient hooks
    try:
        rezero = Rezero(model, masks) if masks is not None else None
        spe = steps_per_epoch(len(train_set), recipe.batch_size, world)
        if spe < 1:
            raise TrainingError(f"training set of {len(train_set)} examples gives no batch")
        ckpt = load_checkpoint(out)
        precision, reason, channels_last = _layout(model, train_set, recipe, device, ckpt,
                                                   out / CHECKPOINT, say)
        if channels_last:  # 4-d weights NHWC; the optimiser state follows their layout
            model.to(memory_format=torch.channels_last)
        cell = Cell(model, masks, out, seed, recipe, spe, device, precision, reason,
                    memory_format_name(channels_last), world, main)
        cell.restore(ckpt, say)
        return cell, ModuleEngine(cell, train_set, test_set, rezero, channels_last,
                                  sync_bn), handle
    except BaseException:
        if handle is not None:
            handle.remove()
        raise


def _layout(model: nn.Module, train_set: ImageDataset, recipe: Recipe, device: torch.device,
            ckpt: dict | None, path: Path, say: Say) -> tuple[str, str, bool]:
    """Precision (with the reason) and channels-last: the recipe's, resolved on ``device``, or
    the checkpoint's where the recipe leaves them automatic."""
    precision, reason = precision_choice(recipe.precision, device, recipe.amp, recipe.amp_dtype,
                                         model)
    channels_last = resolve_channels_last(recipe.channels_last, device, precision)
    if channels_last and recipe.channels_last is None:  # the automatic choice, only where the
        # model's code takes channels-last tensors (a user's x.view(n, -1) does not)
        sample = next(iterate_batches(train_set, 2, shuffle=False, device=device))[0]
        channels_last = channels_last_works(model, sample)
        if not channels_last:
            say("the model's forward fails on channels-last tensors (e.g. x.view): training "
                "in the contiguous layout")
    if ckpt is not None:
        resumed = resumed_setting(ckpt, "precision", recipe.precision, precision, path)
        if resumed != precision:
            reason = f"resumed in the checkpoint's {resumed} (auto now says {precision})"
        precision = resumed
        fmt = resumed_setting(ckpt, "memory_format", recipe.channels_last,
                              memory_format_name(channels_last), path)
        channels_last = fmt == "channels_last"
    return precision, reason, channels_last


def steps_per_epoch(n: int, batch_size: int, world: int) -> int:
    """Optimiser steps in one epoch (global batches with at least one example per rank)."""
    steps = num_batches(n, batch_size)
    if world > 1 and n % batch_size and n % batch_size < world:
        steps -= 1
    return steps

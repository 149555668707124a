"""Train K cells of one model and recipe together: the math of K trainings, one computation.

The loop, the folders and the schedules are the ordinary trainer's (:mod:`pxprune.training.loop`,
:mod:`pxprune.training.cell`); only the step differs (:class:`.engine.StackedEngine`). One cell
to train is the ordinary trainer itself (:func:`pxprune.training.train.train_one`), not a stack
of one. Finished cells leave the stack, and cells resumed at different epochs train together; a
cell that diverges is recorded as failed (a ``TrainingDivergedError``, its last good checkpoint
kept) and leaves it. Running this again resumes every cell from its last epoch-end checkpoint.

Only SGD recipes are stacked (all the paper's are); precision is the recipe's (fp32, bf16
autocast, or fp16 autocast with one loss scale per cell); memory format is always contiguous.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...data.dataset import ImageDataset
from ...errors import FileFormatError, TrainingError
from ...masks import Masks
from ..cell import Cell, Say, load_checkpoint, read_finished
from ..loop import train_cells
from ..precision import precision_choice
from ..recipes import Recipe, get_recipe
from ..train import steps_per_epoch, train_one
from .engine import StackedEngine


@dataclass
class StackCell:
    """What one cell brings: its module (initial weights), masks (None: dense), folder, seed."""

    model: nn.Module
    masks: Masks | None
    out_dir: str | os.PathLike
    seed: int = 0


def train_stacked(
    cells: Sequence[StackCell],
    train_set: ImageDataset,
    test_set: ImageDataset | None,
    recipe: Recipe | str,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    log: Callable[[str], object] | None = print,
    callback: Callable[[int, dict], object] | None = None,
    keep_checkpoint: bool = False,
) -> list[dict | Exception]:
    """Train ``cells`` together; return, per cell, its summary or the exception that failed it.

    Each module is trained in place (its final weights loaded into it). A finished folder
    (``summary.json``) is read back, a checkpointed one resumes. ``callback(i, record)`` runs
    after cell i's epoch files are written; an exception it raises stops the whole stack (a
    test's stand-in for a kill: running again resumes every cell).
    """
    say: Say = log or (lambda _m: None)
    device = torch.device(device)
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if recipe.optimizer != "sgd":
        raise TrainingError(f"the stacked trainer runs SGD recipes, not {recipe.optimizer}")
    spe = steps_per_epoch(len(train_set), recipe.batch_size, 1)
    if spe < 1:
        raise TrainingError(f"training set of {len(train_set)} examples gives no batch")
    results: list[dict | Exception | None] = [None] * len(cells)
    todo = []
    for i, c in enumerate(cells):
        c.model.to(device)
        results[i] = read_finished(Path(c.out_dir), c.model, say)
        if results[i] is None:
            todo.append(i)
    if len(todo) == 1:  # K=1: the ordinary trainer
        i = todo[0]
        c = cells[i]
        try:
            results[i] = train_one(
                c.model, c.masks, train_set, test_set, recipe, out_dir=c.out_dir, device=device,
                seed=c.seed, progress=progress, log=log, keep_checkpoint=keep_checkpoint,
                callback=None if callback is None else lambda _j, r: callback(i, r),
                extra={"stacked_cells": 1})
        except TrainingError as exc:
            results[i] = exc
    elif todo:
        _train_stack(cells, todo, results, train_set, test_set, recipe, spe, device, progress,
                     say, callback, keep_checkpoint)
    return results  # type: ignore[return-value]


def _train_stack(cells: Sequence[StackCell], todo: list[int], results: list,
                 train_set: ImageDataset, test_set: ImageDataset | None, recipe: Recipe,
                 spe: int, device: torch.device, progress: bool, say: Say,
                 callback: Callable[[int, dict], object] | None, keep_checkpoint: bool) -> None:
    """Restore the cells ``todo`` (a cell whose checkpoint does not fit fails alone) and train
    them as one stack."""
    precision, reason = precision_choice(recipe.precision, device, recipe.amp, recipe.amp_dtype,
                                         cells[todo[0]].model)
    runs: list[Cell] = []
    index: list[int] = []  # position in ``cells`` of each stacked run
    for i in todo:
        c = cells[i]
        if c.masks is not None:
            c.masks.apply_(c.model)
        run = Cell(c.model, c.masks, Path(c.out_dir), c.seed, recipe, spe, device, precision,
                   reason)
        try:
            run.out.mkdir(parents=True, exist_ok=True)
            ckpt = load_checkpoint(run.out)
            if ckpt is not None and ckpt.get("precision", precision) != precision:
                raise TrainingError(f"{run.out / 'checkpoint.pt'} was trained in "
                                    f"{ckpt['precision']}, the stack trains in {precision}: "
                                    "resume this cell alone")
            run.restore(ckpt, say)
        except (TrainingError, FileFormatError) as exc:  # this cell alone fails
            results[i] = exc
            continue
        runs.append(run)
        index.append(i)
    if not runs:
        return
    say(f"stacked training: {len(runs)} cells on {device} ({precision})")
    engine = StackedEngine(runs, train_set, test_set, device)
    done = train_cells(engine, runs, train_set, progress=progress, say=say,
                       callback=None if callback is None else lambda j, r: callback(index[j], r),
                       keep_checkpoint=keep_checkpoint, extra={"stacked_cells": len(runs)})
    for i, result in zip(index, done, strict=True):
        results[i] = result

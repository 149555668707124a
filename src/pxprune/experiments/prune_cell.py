"""The pruning cell every command runs (``prune``, ``run``, a transfer cell, the NTK study).

One rounds rule (:func:`cell_rounds`), one pruning checkpoint and clock in the cell's folder,
one connectivity check (:mod:`pxprune.pathview.reach`), one masks file and one layer table,
so that the four drivers cannot drift apart in what a cell means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checkpoint as prune_checkpoint
from ..api import get_method, prune
from ..masks import Masks
from ..methods.spec import MethodSpec
from ..pathview.reach import output_reach
from .checks import check_connected, log_resume
from .data_split import CLOCK_FILE, PruneClock
from .folder import write_layer_table

MASKS_FILE = "masks.safetensors"


def given_rounds(spec: MethodSpec, sparsity: float, *, rounds: int | None = None,
                 iterative_rounds: int | None = None,
                 round_factor: float | None = None) -> int | None:
    """The rounds a cell was asked for, None for the method's default. In this order: the
    spec's ``rounds=``; ``rounds`` (this cell's count, any method); then, for multi-round
    methods only (a one-shot method keeps 1), ``iterative_rounds`` (a study-wide count) or
    ``round_factor`` F (``round(ln(1 - s) / ln F)`` rounds at sparsity s)."""
    if spec.rounds is not None:
        return spec.rounds
    if rounds is not None:
        return int(rounds)
    if get_method(spec.name).default_rounds == 1:
        return None
    if iterative_rounds is not None:
        return int(iterative_rounds)
    if round_factor is not None:
        return max(1, round(math.log(1.0 - sparsity) / math.log(round_factor)))
    return None


def cell_rounds(spec: MethodSpec, sparsity: float, **asked: int | float | None) -> int:
    """The rounds rule of every driver: :func:`given_rounds`, else the method's default
    (100 for PX and SynFlow, 1 for one-shot methods)."""
    given = given_rounds(spec, sparsity, **asked)
    return get_method(spec.name).default_rounds if given is None else given


@dataclass(frozen=True)
class PrunedCell:
    """A cell's masks, the rounds they took, the pruning time (earlier interrupted attempts
    in the same folder included) and ``(reached, total)`` outputs joined to the input by a path
    of kept weights (fewer than all: those logits are constant whatever the image)."""

    masks: Masks
    rounds: int
    seconds: float
    outputs_reached: tuple[int, int] = (1, 1)


def prune_cell_masks(model: torch.nn.Module, spec: MethodSpec, sparsity: float,
               batch: tuple[torch.Tensor, torch.Tensor], *, rounds: int | None = None,
               iterative_rounds: int | None = None, round_factor: float | None = None,
               scope: str = "global", seed: int = 0, keep_dense: str | tuple = (),
               folder: Path | None = None, keep_checkpoint: bool = False,
               allow_disconnected: bool = False, start: tuple[Masks, int] | None = None,
               progress: bool = False, log: Callable[[str], object] = print,
               **options: object) -> PrunedCell:
    """Prune ``model`` with ``spec`` on ``batch`` (already on the model's device); apply and
    return the masks.

    ``folder``: resumable there (the pruning checkpoint, kept with the final masks when
    ``keep_checkpoint``, and the clock that counts interrupted attempts). Masks that cut the
    output off the input are refused unless ``allow_disconnected``. ``start=(masks, j)``
    continues from the first ``j`` rounds of this schedule. ``options``: the score's options
    where the spec gives none (the spec's own win).
    """
    asked = given_rounds(spec, sparsity, rounds=rounds, iterative_rounds=iterative_rounds,
                         round_factor=round_factor)
    checkpoint = None if folder is None else Path(folder) / prune_checkpoint.FILE_NAME
    if checkpoint is not None:
        log_resume(checkpoint, log)
    resume = {} if start is None else {"masks": start[0], "start_round": start[1]}
    clock = PruneClock(folder, checkpoint)  # time before an interruption counts too
    try:
        masks = prune(model, spec.name, sparsity, batch, rounds=asked,
                      scope=spec.scope(scope), seed=seed, progress=progress,
                      checkpoint=checkpoint, keep_checkpoint=keep_checkpoint,
                      keep_dense=keep_dense or (), **resume,
                      **{**options, **spec.score_options})
    finally:
        clock.stop()
    seconds = clock.seconds()
    if allow_disconnected:
        reached = output_reach(model, masks, batch[0][:1])
    else:
        reached = check_connected(model, batch[0], masks, spec.text)
    if reached[0] == 0:
        log(f"warning: {spec.text} at {sparsity:.2%}: no output is joined to the input by a path "
            "of kept weights; every logit is constant")
    elif reached[0] < reached[1]:
        log(f"warning: {spec.text} at {sparsity:.2%}: only {reached[0]} of {reached[1]} outputs "
            "are joined to the input by a path of kept weights; the others are constant")
    return PrunedCell(masks, cell_rounds(spec, sparsity, rounds=asked), seconds, reached)


def clear_checkpoint(folder: Path) -> None:
    """Remove a kept pruning checkpoint and its clock once the masks are saved."""
    (Path(folder) / prune_checkpoint.FILE_NAME).unlink(missing_ok=True)
    (Path(folder) / CLOCK_FILE).unlink(missing_ok=True)


def save_masks(folder: Path, masks: Masks, model: torch.nn.Module,
               input_shape: tuple[int, ...], meta: Mapping[str, object]) -> tuple[dict, str]:
    """The cell's layer table (``layers.csv``, ``layers.txt``) then ``masks.safetensors`` with
    ``meta`` (atomically, the masks last: a folder with them is finished); returns (MACs,
    table)."""
    flops, table = write_layer_table(folder, masks, model, tuple(input_shape))
    masks.save(Path(folder) / MASKS_FILE, dict(meta))
    return flops, table

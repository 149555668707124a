"""The one training loop (DESIGN §7: K=1 is the ordinary trainer): epochs, steps, evaluation,
divergence, checkpoints, metrics, summaries and progress for K cells, driving a step engine.

The engine does the per-step computation: :class:`pxprune.training.module_engine.ModuleEngine`
trains one module (the ordinary ``pxprune run``, DDP included), and
:class:`pxprune.training.stacked.engine.StackedEngine` trains K cells as one vmapped
computation. Everything else, and so every file a cell's folder gets, is this loop's and
:class:`pxprune.training.cell.Cell`'s, whichever engine runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tqdm.auto import tqdm

from ..data.dataset import ImageDataset
from ..errors import TrainingDivergedError
from . import distributed as D
from .cell import Cell, Say


@dataclass
class EpochTotals:
    """One epoch of every live cell, as the engine summed it (over ranks when distributed)."""

    loss_sum: list[float]  # loss x examples, summed (NaN for a cell that diverged)
    correct: list[float]
    seen: list[int]
    lr: list[float]  # each cell's lr at the epoch's first step
    train_seconds: float


class StepEngine(Protocol):
    """What the loop drives: the per-step computation of the live cells, in the cells' order."""

    steps: int  # steps per epoch

    def epoch_batches(self) -> Iterable[object]:
        """The next epoch's inputs, one per step (the cells' data order and augmentation)."""

    def step(self, batch: object) -> None:
        """One optimiser step of every live cell on ``batch``."""

    def epoch_totals(self, t0: float) -> EpochTotals:
        """The epoch's sums, ``t0`` its start."""

    def evaluate(self) -> list[dict] | None:
        """Each live cell's test loss, acc and classes_predicted (None: no test set)."""

    def checkpoint(self, j: int) -> dict:
        """Live cell j's model, optimizer, scheduler, scaler and rng states for its checkpoint
        (its module gets its current weights)."""

    def keep(self, cells: list[int]) -> None:
        """Keep only the live cells ``cells`` (indices into the live list), in that order."""


def train_cells(engine: StepEngine, cells: Sequence[Cell], train_set: ImageDataset, *,
                progress: bool, say: Say, callback: Callable[[int, dict], object] | None,
                keep_checkpoint: bool, extra: dict | None = None) -> list[dict | Exception]:
    """Train ``cells`` (restored, in the engine's order) to the recipe's last epoch; return each
    one's summary, or the TrainingDivergedError that took it out of training.

    ``callback(i, record)`` runs after the epoch's files of cell i are written (an exception it
    raises stops training: running again resumes); ``extra`` goes into every summary.
    """
    results: list[dict | Exception | None] = [None] * len(cells)
    live = list(range(len(cells)))
    epochs = cells[0].recipe.epochs if cells else 0
    named = len(cells) > 1  # log lines name the cell's folder
    show = progress and all(c.main for c in cells)
    bar = tqdm(desc="epochs", total=epochs, initial=min((c.epoch for c in cells), default=0),
               disable=not show)
    try:
        while True:
            done = [j for j, i in enumerate(live) if cells[i].epoch >= epochs]
            for j in done:  # trained to the end (also a checkpoint of the last epoch, resumed)
                i = live[j]
                results[i] = cells[i].finish(train_set, keep_checkpoint, say, extra)
            if done:
                keep = [j for j in range(len(live)) if j not in done]
                engine.keep(keep)
                live = [live[j] for j in keep]
            if not live:
                break
            _one_epoch(engine, [cells[i] for i in live], live, results, show, say, callback,
                       named)
            bar.update()
            failed = [j for j, i in enumerate(live) if results[i] is not None]
            if failed:
                keep = [j for j in range(len(live)) if j not in failed]
                engine.keep(keep)
                live = [live[j] for j in keep]
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def _one_epoch(engine: StepEngine, cells: list[Cell], index: list[int], results: list,
               show: bool, say: Say, callback: Callable[[int, dict], object] | None,
               named: bool) -> None:
    """Train the live ``cells`` one epoch, record, evaluate, save and log it; a diverged cell's
    error goes to ``results`` (its files untouched)."""
    t0 = time.perf_counter()
    first = min(c.epoch for c in cells) + 1
    desc = f"epoch {first}/{cells[0].recipe.epochs}" + (f", {len(cells)} cells" if named else "")
    for batch in tqdm(engine.epoch_batches(), total=engine.steps, desc=desc, leave=False,
                      disable=not show):
        engine.step(batch)
    totals = engine.epoch_totals(t0)
    records: dict[int, dict] = {}
    for j, cell in enumerate(cells):
        try:
            records[j] = cell.train_record(totals.loss_sum[j], totals.correct[j],
                                           totals.seen[j], totals.lr[j])
        except TrainingDivergedError as exc:  # K=1: train() raises it, the caller says it
            if named:
                say(f"{cell.out}: FAILED: {exc}")
            results[index[j]] = exc
    evals = engine.evaluate() if records else None
    seconds = D.all_reduce_max([time.perf_counter() - t0])[0]
    for j, rec in records.items():
        if evals is not None:
            rec.update(test_loss=evals[j]["loss"], test_acc=evals[j]["acc"],
                       test_classes_predicted=evals[j]["classes_predicted"])
        else:
            rec.update(test_loss=None, test_acc=None)
        rec["seconds"] = seconds
        rec["images_per_s"] = totals.seen[j] / totals.train_seconds
        cells[j].save(rec, engine.checkpoint(j))
        say(_epoch_line(cells[j], rec, named))
    if named:
        seen = max(totals.seen)
        say(f"stack epoch: {len(cells)} cells, {len(cells) * seen / totals.train_seconds:.0f} "
            f"img/s in all ({seen / totals.train_seconds:.0f} per cell), {seconds:.1f} s")
    if callback is not None:
        for j, rec in records.items():
            callback(index[j], rec)


def _epoch_line(cell: Cell, rec: dict, named: bool) -> str:
    """The log line of one cell's epoch."""
    test = (f" test_loss {rec['test_loss']:.4f} test_acc {rec['test_acc']:.2f}"
            if rec["test_loss"] is not None else "")
    return (f"{f'{cell.out}: ' if named else ''}epoch {rec['epoch']}/{cell.recipe.epochs} "
            f"lr {rec['lr']:.4g} train_loss {rec['train_loss']:.4f} "
            f"train_acc {rec['train_acc']:.2f}{test} ({rec['seconds']:.1f}s, "
            f"{rec['images_per_s']:.0f} img/s)")

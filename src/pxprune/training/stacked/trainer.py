"""Train K cells of one model and recipe as one stacked computation: the math of K trainings.

Each cell has its own initial weights, masks, seed (data order and crop/flip draws, shared by
cells of one seed at the same epoch), BatchNorm statistics, momentum, lr schedule and folder
(:mod:`.cellrun`: the files the ordinary trainer writes). The data live on the device as uint8
(:class:`pxprune.data.device.DeviceImages`). A cell whose loss turns non-finite is frozen at
once (its update skipped, no host sync) and, at the end of that epoch, recorded as failed
(a ``FloatingPointError``, its last good checkpoint kept) and dropped from the stack; finished
cells leave it too, so cells resumed at different epochs train together. Running this again
resumes every cell from its last epoch-end checkpoint.

Only SGD recipes are stacked (all the paper's are); precision is the recipe's (fp32, bf16
autocast, or fp16 autocast with one loss scale per cell); memory format is always contiguous.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.func import vmap
from tqdm.auto import tqdm

from ...data.dataset import ImageDataset
from ...data.device import DeviceImages
from ...errors import TrainingError
from ...masks import Masks
from ..precision import autocast, precision_choice
from ..recipes import Recipe, get_recipe
from ..train import _steps_per_epoch
from .cellrun import CellRun
from .model import StackedModel
from .sgd import CellScaler, StackedSGD, uniform


@dataclass
class StackCell:
    """What one cell brings: its module (initial weights), masks (None: dense), folder, seed."""

    model: nn.Module
    masks: Masks | None
    out_dir: str | os.PathLike
    seed: int = 0


def _pruned(runs: Sequence[CellRun], device: torch.device) -> dict[str, torch.Tensor]:
    """name -> (K, ...) bool, True where a cell prunes the weight (dense cells prune none)."""
    names = list(dict.fromkeys(n for r in runs if r.masks is not None for n in r.masks))
    params = dict(runs[0].model.named_parameters())
    out = {}
    for name in names:
        out[name] = torch.stack([
            ~r.masks[name] if r.masks is not None and name in r.masks
            else torch.zeros(params[name].shape, dtype=torch.bool) for r in runs]).to(device)
    return out


def _cell_losses(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """(K,) mean cross-entropy of each cell, as ``nn.CrossEntropyLoss`` gives one model."""
    def one(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, target, label_smoothing=smoothing)

    return vmap(one)(logits, y)


def train_step(stack: StackedModel, sgd: StackedSGD, scaler: CellScaler, x: torch.Tensor,
               y: torch.Tensor, lr: torch.Tensor | float, momentum: torch.Tensor | float,
               alive: torch.Tensor, smoothing: float, device: torch.device,
               precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of every cell on its batch ``x`` (K, B, ...), ``y`` (K, B); a cell whose loss
    is not finite is marked in ``alive`` (in place) and not updated. Returns the (K,) losses
    and the logits, detached."""
    with autocast(device, precision):
        logits = stack.forward(x, train=True)
        losses = _cell_losses(logits, y, smoothing)
    scaler.loss(losses).backward()
    finite = scaler.unscale(stack.params)
    alive &= torch.isfinite(losses.detach())
    sgd.step(stack.params, lr, momentum, alive & finite)
    scaler.update(finite)
    return losses.detach(), logits.detach()


@torch.no_grad()
def _evaluate(stack: StackedModel, test: DeviceImages, recipe: Recipe, precision: str,
              device: torch.device) -> list[dict]:
    """Each cell's test loss, accuracy and number of predicted classes (eval mode, as
    :func:`pxprune.training.train.evaluate`: fp32 on CPU, the AMP of the recipe on CUDA)."""
    k = stack.size
    loss = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    predicted = None
    with autocast(device, precision if device.type == "cuda" else "fp32"):
        for x, y in test.eval_batches(recipe.eval_batch_size):
            out = stack.forward(x, train=False, shared=True).float()  # (K, B, C)
            ce = nn.functional.cross_entropy(out.flatten(0, 1), y.repeat(k), reduction="none")
            loss += ce.view(k, -1).sum(1).double()
            pred = out.argmax(-1)
            correct += (pred == y).sum(1)
            if predicted is None:
                predicted = torch.zeros(k, out.shape[-1], dtype=torch.bool, device=device)
            predicted.scatter_(1, pred, True)
    n = len(test)
    classes = predicted.sum(1).tolist() if predicted is not None else [0] * k
    return [{"loss": lo / max(n, 1), "acc": 100.0 * c / max(n, 1), "classes_predicted": int(p)}
            for lo, c, p in zip(loss.tolist(), correct.tolist(), classes, strict=True)]


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
    say = log or (lambda _m: None)
    device = torch.device(device)
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if recipe.optimizer != "sgd":
        raise TrainingError(f"the stacked trainer runs SGD recipes, not {recipe.optimizer}")
    spe = _steps_per_epoch(len(train_set), recipe.batch_size, 1)
    if spe < 1:
        raise TrainingError(f"training set of {len(train_set)} examples gives no batch")
    precision, reason = precision_choice(recipe.precision, device, recipe.amp, recipe.amp_dtype,
                                         cells[0].model)
    results: list[dict | Exception | None] = [None] * len(cells)
    runs: list[CellRun] = []
    index: list[int] = []  # position in ``cells`` of each stacked run
    for i, c in enumerate(cells):
        run = CellRun(c.model.to(device), c.masks, Path(c.out_dir), c.seed, recipe, spe,
                      precision, reason, device)
        done = run.finished_summary()
        if done is not None:
            say(f"{run.out}: already finished (summary.json exists), not training again")
            results[i] = done
            continue
        try:
            run.open()
        except TrainingError as exc:
            results[i] = exc
            continue
        runs.append(run)
        index.append(i)
    if runs:
        _train(runs, index, results, train_set, test_set, recipe, device, precision, progress,
               say, callback, keep_checkpoint, len(runs))
    return results  # type: ignore[return-value]


def _train(runs: list[CellRun], index: list[int], results: list, train_set: ImageDataset,
           test_set: ImageDataset | None, recipe: Recipe, device: torch.device, precision: str,
           progress: bool, say: Callable[[str], object],
           callback: Callable[[int, dict], object] | None, keep_checkpoint: bool,
           stacked: int) -> None:
    """The loop of :func:`train_stacked` over the cells still to train."""
    stack = StackedModel([r.model for r in runs], device)
    dtype = next(iter(stack.params.values())).dtype
    sgd = StackedSGD(stack.params, _pruned(runs, device), recipe.weight_decay,
                     recipe.nesterov and recipe.momentum > 0, recipe.momentum > 0)
    scaler = CellScaler(len(runs), device, device.type == "cuda" and precision == "fp16")
    with torch.no_grad():
        for k, r in enumerate(runs):
            for name, buf in r.momentum.items():
                sgd.bufs[name][k].copy_(buf)
            scaler.load_cell(k, r.scaler)
    sgd.rezero(stack.params)
    data = DeviceImages(train_set, device, dtype)
    test = DeviceImages(test_set, device, dtype) if test_set is not None else None
    alive = torch.ones(len(runs), dtype=torch.bool, device=device)
    say(f"stacked training: {len(runs)} cells on {device} ({precision})")
    bs = recipe.batch_size
    while runs:
        k = len(runs)
        t0 = time.perf_counter()
        groups = list(dict.fromkeys((r.seed, r.epoch) for r in runs))
        plans = [data.plan(bs, s, e, recipe.augment) for s, e in groups]
        of = [groups.index((r.seed, r.epoch)) for r in runs]
        shared = len(plans) == 1  # one batch for all: expanded, not copied
        cell_plan = (None if shared or of == list(range(k))
                     else torch.tensor(of, device=device))
        tables = [r.schedule() for r in runs]
        lr_rows = list(zip(*(t[0] for t in tables), strict=True))
        mom_rows = list(zip(*(t[1] for t in tables), strict=True))
        lr_dev = torch.tensor(lr_rows, dtype=torch.float64, device=device)
        mom_dev = torch.tensor(mom_rows, dtype=torch.float64, device=device)
        loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
        correct = torch.zeros(k, dtype=torch.int64, device=device)
        seen = 0
        first = min(r.epoch for r in runs)
        bar = tqdm(range(runs[0].spe), desc=f"stack of {k}, epoch {first + 1}", leave=False,
                   disable=not progress)
        for b in bar:
            x, y = data.batch(plans, cell_plan, bs, b, recipe.augment)
            if shared and k > 1:
                x, y = x.expand(k, *x.shape[1:]), y.expand(k, *y.shape[1:])
            lr, mom = uniform(lr_rows[b]), uniform(mom_rows[b])
            losses, logits = train_step(stack, sgd, scaler, x, y, lr_dev[b] if lr is None else lr,
                                        mom_dev[b] if mom is None else mom, alive,
                                        recipe.label_smoothing, device, precision)
            n = y.shape[1]
            loss_sum += losses.double() * n
            correct += (logits.argmax(-1) == y).sum(1)
            seen += n
        train_seconds = max(time.perf_counter() - t0, 1e-9)
        ok = alive.tolist()
        evals = _evaluate(stack, test, recipe, precision, device) if test is not None else None
        seconds = time.perf_counter() - t0
        leaving, written = [], []
        rows = zip(runs, loss_sum.tolist(), correct.tolist(), strict=True)
        for j, (r, ls, c) in enumerate(rows):
            try:
                rec = r.record(ls if ok[j] else float("nan"), c, seen, lr_rows[0][j])
            except FloatingPointError as exc:
                say(f"{r.out}: FAILED: {exc}")
                results[index[j]] = exc
                leaving.append(j)
                continue
            if evals is not None:
                rec.update(test_loss=evals[j]["loss"], test_acc=evals[j]["acc"],
                           test_classes_predicted=evals[j]["classes_predicted"])
            else:
                rec.update(test_loss=None, test_acc=None)
            rec["seconds"] = seconds
            rec["images_per_s"] = seen / train_seconds
            r.save(rec, stack.cell_state(j),
                   {n: t[j].detach().cpu().clone() for n, t in sgd.bufs.items()},
                   scaler.state_dict(j))
            written.append(j)
            test_msg = (f" test_acc {rec['test_acc']:.2f}" if evals is not None else "")
            say(f"{r.out}: epoch {rec['epoch']}/{recipe.epochs} train_loss "
                f"{rec['train_loss']:.4f}{test_msg}")
            if r.epoch >= recipe.epochs:
                results[index[j]] = r.finish(train_set, keep_checkpoint, stacked)
                say(f"{r.out}: finished, final test acc {results[index[j]]['final_test_acc']}")
                leaving.append(j)
        say(f"stack epoch: {k} cells, {k * seen / train_seconds:.0f} img/s in all "
            f"({seen / train_seconds:.0f} per cell), {seconds:.1f} s")
        if callback is not None:
            for j in written:
                callback(index[j], runs[j].history[-1])
        if leaving:
            keep = [j for j in range(k) if j not in leaving]
            idx = torch.tensor(keep, dtype=torch.long, device=device)
            stack.keep(keep)
            sgd.keep(idx)
            scaler.keep(idx)
            alive = alive.index_select(0, idx)
            runs = [runs[j] for j in keep]
            index = [index[j] for j in keep]

"""The stacked step engine: K cells' weights stacked and stepped as one vmapped computation.

What :func:`pxprune.training.loop.train_cells` drives for K > 1 (the loop, the folders and the
schedule are the ordinary trainer's). Each cell keeps its own masks, BatchNorm statistics,
momentum, fp16 loss scale and lr schedule (read off the cell's own scheduler); its data order and
crop/flip draws come from the device-held dataset (:class:`pxprune.data.device.DeviceImages`),
shared by cells of one seed at the same epoch. A cell whose loss turns non-finite is frozen at
once (its update skipped, no host sync) and reports a NaN loss for the epoch, so the loop takes
it out as diverged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.func import vmap

from ...data.dataset import ImageDataset
from ...data.device import DeviceImages
from ..cell import Cell
from ..loop import EpochTotals
from ..optim import epoch_schedule, sgd_settings
from ..precision import autocast
from ..rng import seeded_rng_state
from .model import StackedModel
from .sgd import CellScaler, StackedSGD, uniform


def _pruned(cells: Sequence[Cell], device: torch.device) -> dict[str, torch.Tensor]:
    """name -> (K, ...) bool, True where a cell prunes the weight (dense cells prune none)."""
    names = list(dict.fromkeys(n for c in cells if c.masks is not None for n in c.masks))
    params = dict(cells[0].model.named_parameters())
    out = {}
    for name in names:
        out[name] = torch.stack([
            ~c.masks[name] if c.masks is not None and name in c.masks
            else torch.zeros(params[name].shape, dtype=torch.bool) for c in cells]).to(device)
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
def evaluate_stack(stack: StackedModel, test: DeviceImages, batch_size: int, precision: str,
                   device: torch.device) -> list[dict]:
    """Each cell's test loss, accuracy and number of predicted classes (eval mode, as
    :func:`pxprune.training.evaluate.evaluate`: fp32 on CPU, the recipe's AMP on CUDA)."""
    k = stack.size
    loss = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    predicted = None
    with autocast(device, precision if device.type == "cuda" else "fp32"):
        for x, y in test.eval_batches(batch_size):
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


class StackedEngine:
    """Steps ``cells`` (restored, masks applied, SGD recipe) as one stack on ``device``."""

    def __init__(self, cells: Sequence[Cell], train_set: ImageDataset,
                 test_set: ImageDataset | None, device: torch.device) -> None:
        self.cells = list(cells)
        first = self.cells[0]
        self.recipe, self.device, self.precision = first.recipe, device, first.precision
        self.steps = first.spe
        self.stack = StackedModel([c.model for c in self.cells], device)
        dtype = next(iter(self.stack.params.values())).dtype
        opts = sgd_settings(self.recipe)
        self.sgd = StackedSGD(self.stack.params, _pruned(self.cells, device),
                              opts["weight_decay"], opts["nesterov"], opts["momentum"] > 0)
        self.scaler = CellScaler(len(self.cells), device,
                                 device.type == "cuda" and self.precision == "fp16")
        self.rngs = [c.rng if c.rng is not None else seeded_rng_state(c.seed, device)
                     for c in self.cells]  # training draws none: the checkpoint keeps this
        with torch.no_grad():
            for k, c in enumerate(self.cells):  # a resumed cell's momentum and loss scale
                names = [n for n, _ in c.model.named_parameters()]
                for i, s in c.optimizer.state_dict()["state"].items():
                    if s.get("momentum_buffer") is not None:
                        self.sgd.bufs[names[i]][k].copy_(s["momentum_buffer"])
                c.optimizer.state.clear()  # the live momentum is in the stack
                self.scaler.load_cell(k, c.scaler_state)
        self.sgd.rezero(self.stack.params)
        self.data = DeviceImages(train_set, device, dtype)
        self.test = DeviceImages(test_set, device, dtype) if test_set is not None else None
        self.alive = torch.ones(len(self.cells), dtype=torch.bool, device=device)

    def epoch_batches(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Plans each (seed, epoch) group's order and draws and each cell's lr/momentum per
        step (advancing its scheduler one epoch); yields (step, images (K, B, ...), labels)."""
        k, bs, augment, dev = len(self.cells), self.recipe.batch_size, self.recipe.augment, \
            self.device
        groups = list(dict.fromkeys((c.seed, c.epoch) for c in self.cells))
        plans = [self.data.plan(bs, s, e, augment) for s, e in groups]
        of = [groups.index((c.seed, c.epoch)) for c in self.cells]
        shared = len(plans) == 1  # one batch for all: expanded, not copied
        cell_plan = None if shared or of == list(range(k)) else torch.tensor(of, device=dev)
        tables = [epoch_schedule(c.optimizer, c.scheduler, c.spe) for c in self.cells]
        self.lr_rows = list(zip(*(t[0] for t in tables), strict=True))
        self.mom_rows = list(zip(*(t[1] for t in tables), strict=True))
        self.lr_dev = torch.tensor(self.lr_rows, dtype=torch.float64, device=dev)
        self.mom_dev = torch.tensor(self.mom_rows, dtype=torch.float64, device=dev)
        self.loss_sum = torch.zeros(k, dtype=torch.float64, device=dev)
        self.correct = torch.zeros(k, dtype=torch.int64, device=dev)
        self.seen = 0
        for b in range(self.steps):
            x, y = self.data.batch(plans, cell_plan, bs, b, augment)
            if shared and k > 1:
                x, y = x.expand(k, *x.shape[1:]), y.expand(k, *y.shape[1:])
            yield b, x, y

    def step(self, batch: tuple[int, torch.Tensor, torch.Tensor]) -> None:
        """One SGD step of every live cell with its own lr and momentum of step b."""
        b, x, y = batch
        lr, mom = uniform(self.lr_rows[b]), uniform(self.mom_rows[b])
        losses, logits = train_step(self.stack, self.sgd, self.scaler, x, y,
                                    self.lr_dev[b] if lr is None else lr,
                                    self.mom_dev[b] if mom is None else mom, self.alive,
                                    self.recipe.label_smoothing, self.device, self.precision)
        n = y.shape[1]
        self.loss_sum += losses.double() * n
        self.correct += (logits.argmax(-1) == y).sum(1)
        self.seen += n

    def epoch_totals(self, t0: float) -> EpochTotals:
        """Each cell's sums (NaN loss for a frozen cell) and the lr of its first step."""
        train_seconds = max(time.perf_counter() - t0, 1e-9)
        ok = self.alive.tolist()
        loss = [s if good else float("nan") for s, good in zip(self.loss_sum.tolist(), ok,
                                                                  strict=True)]
        return EpochTotals(loss, self.correct.tolist(), [self.seen] * len(self.cells),
                           list(self.lr_rows[0]), train_seconds)

    def evaluate(self) -> list[dict] | None:
        """Every cell's test metrics in one stacked pass (None without a test set)."""
        if self.test is None:
            return None
        return evaluate_stack(self.stack, self.test, self.recipe.eval_batch_size,
                              self.precision, self.device)

    def checkpoint(self, j: int) -> dict:
        """Cell j's slice loaded into its module and its momentum put into its (never stepped)
        optimiser for the ``state_dict``s the ordinary trainer writes."""
        cell = self.cells[j]
        cell.model.load_state_dict(self.stack.cell_state(j))
        params = dict(cell.model.named_parameters())
        for name, t in self.sgd.bufs.items():
            cell.optimizer.state[params[name]]["momentum_buffer"] = t[j].detach().cpu().clone()
        parts = {"model": cell.model.state_dict(), "optimizer": cell.optimizer.state_dict(),
                 "scheduler": cell.scheduler.state_dict(), "scaler": self.scaler.state_dict(j),
                 "rng": self.rngs[j]}
        cell.optimizer.state.clear()  # the live momentum is in the stack
        return parts

    def keep(self, cells: list[int]) -> None:
        """Keep only the live cells ``cells``, in that order."""
        if cells == list(range(len(self.cells))):
            return
        idx = torch.tensor(cells, dtype=torch.long, device=self.device)
        self.stack.keep(cells)
        self.sgd.keep(idx)
        self.scaler.keep(idx)
        self.alive = self.alive.index_select(0, idx)
        self.cells = [self.cells[j] for j in cells]
        self.rngs = [self.rngs[j] for j in cells]

"""The ordinary step engine: one module (DDP-wrapped under torchrun) and its optimiser, AMP and
masks, stepped batch by batch; what :func:`pxprune.training.loop.train_cells` drives for K=1.

It is not the stacked engine at K=1: vmap over one cell measured 0.89x this step's speed, and
this one also takes any optimiser, channels-last and DDP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from torch import nn

from ..data.dataset import ImageDataset
from ..data.loader import iterate_batches
from ..masks import Masks
from . import distributed as D
from .cell import Cell
from .evaluate import evaluate
from .loop import EpochTotals
from .optim import step_schedule
from .precision import autocast
from .rng import rng_state, seed_globals, set_rng_state


class Rezero:
    """Re-zero pruned weights after each optimiser step, with the masks cached on the device.

    ``MaskHandle.reapply()`` copies every CPU mask to the device on each call (an H2D copy of
    all masks per step on GPU); this keeps one bool "pruned" tensor per weight on its device and
    uses ``masked_fill_`` (which also clears a NaN, where multiplying by 0 would not).
    """

    def __init__(self, model: nn.Module, masks: Masks):
        params = dict(model.named_parameters())
        self.pairs = [(params[n], (~m).to(params[n].device)) for n, m in masks.items()]

    @torch.no_grad()
    def __call__(self) -> None:
        for p, pruned in self.pairs:
            p.masked_fill_(pruned, 0)


class ModuleEngine:
    """Trains ``cell.model`` (masks already attached) on ``train_set``; ``rezero`` re-zeroes
    pruned weights after each step. Applies the cell's resumed scaler and RNG state (or seeds
    the global RNGs for a fresh run) and wraps the module in DDP when distributed."""

    def __init__(self, cell: Cell, train_set: ImageDataset, test_set: ImageDataset | None,
                 rezero: Rezero | None, channels_last: bool, sync_bn: bool) -> None:
        self.cell, self.train_set, self.test_set, self.rezero = cell, train_set, test_set, rezero
        self.recipe, self.device, self.precision = cell.recipe, cell.device, cell.precision
        self.channels_last, self.steps = channels_last, cell.spe
        self.rank, self.world = D.get_rank(), D.get_world_size()
        self.optimizer, self.scheduler = cell.optimizer, cell.scheduler
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda"
                                           and self.precision == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)
        if cell.rng is not None:  # resumed
            if self.scaler.is_enabled() and cell.scaler_state:
                self.scaler.load_state_dict(cell.scaler_state)
            set_rng_state(cell.rng)
            if rezero is not None:
                rezero()
        else:
            seed_globals(cell.seed)
        self.net = (D.wrap_ddp(cell.model, self.device, sync_bn=sync_bn) if self.world > 1
                    else cell.model)

    def epoch_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of the cell's next epoch; resets the epoch's sums."""
        self.net.train()
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.seen = 0
        r, epoch = self.recipe, self.cell.epoch
        if self.world > 1:
            return D.shard_batches(self.train_set, r.batch_size, rank=self.rank,
                                   world_size=self.world, seed=self.cell.seed, epoch=epoch,
                                   augment=r.augment, device=self.device)
        return iterate_batches(self.train_set, r.batch_size, shuffle=True, seed=self.cell.seed,
                               epoch=epoch, augment=r.augment, device=self.device)

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Forward, backward, (scaled) optimiser step, re-zero, schedule step; sums the loss."""
        x, y = batch
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            logits = self.net(x)
            loss = self.criterion(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.rezero is not None:
            self.rezero()
        step_schedule(self.scheduler, skips_allowed=self.scaler.is_enabled())
        n = y.numel()
        self.loss_sum += loss.detach().double() * n
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.seen += n

    def epoch_totals(self, t0: float) -> EpochTotals:
        """The epoch's sums over ranks (BN statistics averaged over ranks first)."""
        train_seconds = time.perf_counter() - t0
        if self.world > 1:
            D.average_buffers(self.cell.model)
        tl, tc, tn = D.all_reduce_sum([self.loss_sum.item(), self.correct.item(), self.seen])
        train_seconds = max(D.all_reduce_max([train_seconds])[0], 1e-9)  # the slowest rank
        return EpochTotals([tl], [tc], [int(tn)], [self.lr], train_seconds)

    def evaluate(self) -> list[dict] | None:
        """The module's test metrics (None without a test set)."""
        if self.test_set is None:
            return None
        return [evaluate(self.net, self.test_set, batch_size=self.recipe.eval_batch_size,
                         device=self.device, recipe=self.recipe)]

    def checkpoint(self, j: int) -> dict:
        """The live states, as the checkpoint holds them."""
        return {"model": self.cell.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(self.device)}

    def keep(self, cells: list[int]) -> None:
        """Nothing to drop: the one cell left (finished or failed) and training ends."""

"""One stacked cell as the ordinary trainer sees its folder: resume, checkpoint, metrics, summary.

Every file is written in the format :func:`pxprune.training.train.train` writes (the same
``checkpoint.pt`` keys, a real ``torch.optim.SGD`` and scheduler ``state_dict``, the same
``metrics.jsonl`` lines and ``summary.json``), so ``report``, ``sweep --status`` and either
trainer can read or resume a cell the other started. Each cell keeps its own single module, SGD
optimiser and lr scheduler: the scheduler gives the cell's lr and momentum for every step, and
the optimiser (never stepped; it holds the momentum only when a checkpoint is written) gives the
checkpoint its ``optimizer`` entry.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...data.dataset import ImageDataset
from ...errors import TrainingError
from ...io import load_tensors
from ...masks import Masks
from ...tempfiles import remove_stale_temps
from ..recipes import Recipe
from ..train import (
    CHECKPOINT,
    FINAL_MODEL,
    METRICS,
    SUMMARY,
    _atomic_write_bytes,
    _atomic_write_text,
    _comparable,
    _rng_state,
    _set_rng_state,
    _summary,
    make_optimizer,
    make_scheduler,
    masks_fingerprint,
)


def seeded_rng_state(seed: int, device: torch.device) -> dict:
    """The global RNG state the ordinary trainer has after seeding with ``seed`` (what its
    checkpoints hold when training draws no random numbers), leaving the current state as is."""
    saved = _rng_state(device)
    try:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        return _rng_state(device)
    finally:
        _set_rng_state(saved)


@dataclass
class CellRun:
    """A cell's module, masks, folder, seed, schedule and history while it trains in a stack."""

    model: nn.Module
    masks: Masks | None
    out: Path
    seed: int
    recipe: Recipe
    spe: int
    precision: str
    precision_reason: str
    device: torch.device
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    rng: dict = field(default_factory=dict)
    scaler: dict = field(default_factory=dict)
    momentum: dict[str, torch.Tensor] = field(default_factory=dict)  # resumed buffers

    def __post_init__(self) -> None:
        """The cell's own optimiser and scheduler, as the ordinary trainer builds them."""
        self.fingerprint = masks_fingerprint(self.masks)
        if self.masks is not None:
            self.masks.apply_(self.model)
        self.optimizer = make_optimizer(self.model, self.recipe)
        self.scheduler = make_scheduler(self.optimizer, self.recipe, self.spe)

    def finished_summary(self) -> dict | None:
        """The summary of a finished folder (final weights loaded into the module), or None."""
        path = self.out / SUMMARY
        if not path.exists():
            return None
        final = self.out / FINAL_MODEL
        if final.exists():
            self.model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
        return json.loads(path.read_text())

    def open(self) -> None:
        """Create the folder, or resume its checkpoint (same recipe, seed, masks, precision)."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / CHECKPOINT
        self.rng = seeded_rng_state(self.seed, self.device)
        if path.exists():
            ckpt = load_tensors(path, "the training checkpoint", map_location="cpu",
                                hint="delete it to restart training from epoch 0")
            for key, mine in (("recipe", _comparable(self.recipe.to_dict())),
                              ("seed", self.seed), ("masks", self.fingerprint),
                              ("world_size", 1)):
                theirs = _comparable(ckpt[key]) if key == "recipe" else ckpt[key]
                if theirs != mine:
                    raise TrainingError(f"{path} was written with another {key} ({theirs!r}, "
                                        f"now {mine!r}); use a new out_dir or delete the "
                                        "checkpoint")
            if ckpt.get("precision", self.precision) != self.precision:
                raise TrainingError(f"{path} was trained in {ckpt['precision']}, the stack "
                                    f"trains in {self.precision}: resume this cell alone")
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            names = [n for n, _ in self.model.named_parameters()]
            state = self.optimizer.state_dict()["state"]
            self.momentum = {names[i]: s["momentum_buffer"] for i, s in state.items()
                             if s.get("momentum_buffer") is not None}
            self.scaler = dict(ckpt.get("scaler") or {})
            self.rng = ckpt["rng"]
            self.history = list(ckpt["history"])
            self.epoch = int(ckpt["epoch"])
        remove_stale_temps(self.out)  # metrics.jsonl always agrees with the checkpoint
        _atomic_write_text(self.out / METRICS,
                           "".join(json.dumps(r) + "\n" for r in self.history))

    def schedule(self) -> tuple[list[float], list[float]]:
        """The lr and momentum of each step of the cell's next epoch (the scheduler advances
        one epoch, as the ordinary trainer's does while it trains it)."""
        lrs, moms = [], []
        group = self.optimizer.param_groups[0]
        with warnings.catch_warnings():  # the optimiser is never stepped: torch would warn
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step")
            for _ in range(self.spe):
                lrs.append(float(group["lr"]))
                moms.append(float(group.get("momentum", 0.0)))
                self.scheduler.step()
        return lrs, moms

    def record(self, loss: float, correct: int, seen: int, lr: float) -> dict:
        """The epoch's metrics line (train part); raises FloatingPointError as train() does."""
        self.epoch += 1
        rec = {"epoch": self.epoch, "lr": lr, "train_loss": loss / max(seen, 1),
               "train_acc": 100.0 * correct / max(seen, 1)}
        if not math.isfinite(rec["train_loss"]):
            raise FloatingPointError(
                f"training diverged in epoch {self.epoch}: train loss {rec['train_loss']} "
                f"(lr {lr:.4g}); the last good checkpoint is kept in {self.out}")
        return rec

    def save(self, record: dict, state: dict[str, torch.Tensor],
             momentum: dict[str, torch.Tensor], scaler: dict) -> None:
        """Append the epoch's record and write the checkpoint, as train() does after an epoch."""
        self.history.append(record)
        self.model.load_state_dict(state)
        params = dict(self.model.named_parameters())
        for name, buf in momentum.items():
            self.optimizer.state[params[name]]["momentum_buffer"] = buf
        ckpt = {"epoch": self.epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": scaler, "rng": self.rng, "history": self.history,
                "recipe": self.recipe.to_dict(), "seed": self.seed, "masks": self.fingerprint,
                "world_size": 1, "precision": self.precision, "memory_format": "contiguous"}
        _atomic_write_bytes(self.out / CHECKPOINT, lambda f, s=ckpt: torch.save(s, f))
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.optimizer.state.clear()  # the live momentum is in the stack

    def finish(self, train_set: ImageDataset, keep_checkpoint: bool, stacked: int) -> dict:
        """Write ``model.pt`` and ``summary.json`` (train()'s summary) and drop the checkpoint."""
        summary = _summary(self.model, self.masks, train_set, self.history, self.recipe,
                           self.seed, 1, self.device, self.fingerprint)
        summary["recipe"]["amp_dtype"] = {"fp16": "float16", "bf16": "bfloat16"}.get(
            self.precision)
        summary.update(precision=self.precision, precision_reason=self.precision_reason,
                       memory_format="contiguous",
                       eval_precision=self.precision if self.device.type == "cuda" else "fp32",
                       stacked_cells=stacked)
        _atomic_write_bytes(self.out / FINAL_MODEL,
                            lambda f: torch.save(self.model.state_dict(), f))
        _atomic_write_text(self.out / SUMMARY, json.dumps(summary, indent=2) + "\n")
        if not keep_checkpoint:
            (self.out / CHECKPOINT).unlink(missing_ok=True)
        return summary

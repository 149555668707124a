"""One training run's folder: restore from its checkpoint, the epoch record, save, finish.

Both trainers write every cell through :class:`Cell`, so a folder is the same whoever trained it
and either trainer resumes what the other started. A folder holds ``checkpoint.pt`` (rewritten
atomically after every epoch, removed at the end unless kept), ``metrics.jsonl`` (one line per
epoch, always agreeing with the checkpoint), and, once finished, ``model.pt`` and
``summary.json``. Under torchrun every rank keeps the cell's state and rank 0 writes the files.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.dataset import ImageDataset
from ..errors import (
    DamagedFileError,
    TrainingDivergedError,
    TrainingError,
    WeightsMismatchError,
)
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, load_tensors, read_json
from ..masks import Masks
from ..models.weights import load_state_dict_strictly, read_state_dict
from ..tempfiles import remove_stale_temps
from . import distributed as D
from .optim import make_optimizer, make_scheduler
from .recipes import Recipe
from .summary import run_summary

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
FINAL_MODEL = "model.pt"

Say = Callable[[str], object]

# Recipe fields a checkpoint is not compared on: their resolved values are checked instead.
_RESOLVED_FIELDS = ("precision", "channels_last")


def masks_fingerprint(masks: Masks | None) -> str:
    """SHA-256 of mask names, shapes and bits (checks that a resume uses the same masks)."""
    if masks is None:
        return "dense"
    h = hashlib.sha256()
    for name, m in masks.items():
        h.update(f"{name}:{tuple(m.shape)};".encode())
        h.update(np.packbits(m.reshape(-1).numpy()).tobytes())
    return h.hexdigest()


def comparable(recipe: dict) -> dict:
    """A recipe dict without the fields resolved per device (older checkpoints lack them)."""
    return {k: v for k, v in recipe.items() if k not in _RESOLVED_FIELDS}


def read_finished(out: Path, model: nn.Module, say: Say) -> dict | None:
    """The summary of a finished folder, its final weights loaded into ``model``; else None.
    An edited or truncated summary or ``model.pt`` is one line (a PxpruneError), not a traceback."""
    path = out / SUMMARY
    if not path.exists():
        return None
    hint = "use another out_dir, or delete the folder to train again"
    summary = read_json(path, "the finished run's summary", hint=hint)
    if not isinstance(summary, dict):
        raise DamagedFileError(f"the finished run's summary {path} is not a JSON object; {hint}")
    final = out / FINAL_MODEL
    if final.exists():
        state = read_state_dict(final, "the final weights", hint=hint)
        load_state_dict_strictly(model, state, source=f"the final weights {final}",
                                 hint=f"; {hint}")
    say(f"{out}: already finished (summary.json exists), not training again; "
        f"final test acc {summary.get('final_test_acc')}")
    return summary


# what every checkpoint holds (``scaler`` may be empty), and the type of each entry
CHECKPOINT_ENTRIES = {"epoch": int, "model": dict, "optimizer": dict, "scheduler": dict,
                      "rng": dict, "history": list, "recipe": dict, "seed": int,
                      "masks": str, "world_size": int}
RESTART_HINT = "delete it to restart training from epoch 0"


def load_checkpoint(out: Path) -> dict | None:
    """The folder's training checkpoint on the CPU (load_state_dict moves weights and optimiser
    state to the model's device; RNG states must stay CPU tensors), or None. A checkpoint that
    lacks an entry or holds one of the wrong type (edited, or not pxprune's) is a
    TrainingError line; an unreadable one a FileFormatError line."""
    path = out / CHECKPOINT
    if not path.exists():
        return None
    ckpt = load_tensors(path, "the training checkpoint", map_location="cpu", hint=RESTART_HINT)
    if not isinstance(ckpt, dict):
        raise TrainingError(f"the training checkpoint {path} holds a {type(ckpt).__name__}, "
                            f"not a checkpoint; {RESTART_HINT}")
    for key, kind in CHECKPOINT_ENTRIES.items():
        value = ckpt.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            found = "no" if value is None else f"a {type(value).__name__} as its"
            raise TrainingError(f"the training checkpoint {path} is damaged ({found} {key!r} "
                                f"entry); {RESTART_HINT}")
    return ckpt


def resumed_setting(ckpt: dict, key: str, requested: object, resolved: str, path: Path) -> str:
    """The checkpoint's resolved ``key`` when the recipe left it automatic, else ours (checked)."""
    saved = ckpt.get(key)
    if saved is None or saved == resolved:
        return resolved
    if requested in ("auto", None):
        return saved
    raise TrainingError(f"{path} was trained with {key} {saved!r}, now {resolved!r} is asked; "
                        f"use a new out_dir or delete the checkpoint")


@dataclass
class Cell:
    """A run's module (unwrapped), masks, folder, seed, optimiser, schedule and history.

    ``rng`` and ``scaler_state`` are what a resumed checkpoint held (None / {} for a fresh run);
    the step engine applies them. The module must have its final layout (memory format) before
    the cell is made: the optimiser is built over its parameters here.
    """

    model: nn.Module
    masks: Masks | None
    out: Path
    seed: int
    recipe: Recipe
    spe: int
    device: torch.device
    precision: str
    precision_reason: str
    memory_format: str = "contiguous"
    world: int = 1
    main: bool = True
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    rng: dict | None = None
    scaler_state: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fingerprint = masks_fingerprint(self.masks)
        self.optimizer = make_optimizer(self.model, self.recipe)
        self.scheduler = make_scheduler(self.optimizer, self.recipe, self.spe)

    def restore(self, ckpt: dict | None, say: Say) -> None:
        """Continue after the checkpoint's epoch (same recipe, seed, masks and world size), then
        rewrite ``metrics.jsonl`` to agree with it (a kill may have split them)."""
        if ckpt is not None:
            path = self.out / CHECKPOINT
            for key, mine in (("recipe", comparable(self.recipe.to_dict())), ("seed", self.seed),
                              ("masks", self.fingerprint), ("world_size", self.world)):
                theirs = comparable(ckpt[key]) if key == "recipe" else ckpt[key]
                if theirs != mine:
                    raise TrainingError(f"{path} was written with another {key} ({theirs!r}, "
                                        f"now {mine!r}); use a new out_dir or delete the "
                                        "checkpoint")
            try:
                load_state_dict_strictly(self.model, ckpt["model"],
                                         source=f"the training checkpoint {path}",
                                         hint=f"; {RESTART_HINT}")
            except WeightsMismatchError as exc:  # a TrainingError fails one cell of a stack
                raise TrainingError(str(exc)) from None
            try:
                self.optimizer.load_state_dict(ckpt["optimizer"])
                self.scheduler.load_state_dict(ckpt["scheduler"])
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
                raise TrainingError(f"the training checkpoint {path} does not fit this run's "
                                    f"optimiser or schedule ({first}); {RESTART_HINT}") from None
            self.scaler_state = dict(ckpt.get("scaler") or {})
            self.rng = ckpt["rng"]
            self.history = list(ckpt["history"])
            self.epoch = int(ckpt["epoch"])
            say(f"{self.out}: resuming after epoch {self.epoch}/{self.recipe.epochs} "
                f"({self.precision}, {self.memory_format})")
        if self.main:
            remove_stale_temps(self.out)  # a checkpoint half-written by a killed run
            atomic_write_text(self.out / METRICS,
                               "".join(json.dumps(r) + "\n" for r in self.history))

    def train_record(self, loss_sum: float, correct: float, seen: int, lr: float) -> dict:
        """The next epoch's metrics line, train part; a non-finite loss is a
        TrainingDivergedError (nothing written: the last good checkpoint stays)."""
        epoch = self.epoch + 1
        rec = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / max(seen, 1),
               "train_acc": 100.0 * correct / max(seen, 1)}
        if not math.isfinite(rec["train_loss"]):
            kept = (f"the last good checkpoint (epoch {self.epoch}) is kept in {self.out}"
                    if self.epoch else "no epoch finished, so no checkpoint was written")
            raise TrainingDivergedError(f"training diverged in epoch {epoch}: train loss "
                                        f"{rec['train_loss']} (lr {lr:.4g}); {kept}")
        return rec

    def save(self, record: dict, parts: dict) -> None:
        """Append the epoch's record and write the checkpoint: ``parts`` holds the live model,
        optimizer, scheduler, scaler and rng states, as the step engine has them."""
        self.history.append(record)
        self.epoch = int(record["epoch"])
        if self.main:
            state = {"epoch": self.epoch, "model": parts["model"],
                     "optimizer": parts["optimizer"], "scheduler": parts["scheduler"],
                     "scaler": parts["scaler"], "rng": parts["rng"], "history": self.history,
                     "recipe": self.recipe.to_dict(), "seed": self.seed,
                     "masks": self.fingerprint, "world_size": self.world,
                     "precision": self.precision, "memory_format": self.memory_format}
            atomic_write_bytes(self.out / CHECKPOINT, lambda f, s=state: torch.save(s, f))
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
        D.barrier()

    def finish(self, train_set: ImageDataset, keep_checkpoint: bool, say: Say,
               extra: dict | None = None) -> dict:
        """Write ``model.pt`` and ``summary.json`` (plus ``extra`` fields), drop the checkpoint
        unless kept; return the summary."""
        summary = run_summary(self.model, self.masks, train_set, self.history, self.recipe,
                              self.seed, self.world, self.device, self.fingerprint)
        summary["recipe"]["amp_dtype"] = {"fp16": "float16", "bf16": "bfloat16"}.get(
            self.precision)
        summary.update(precision=self.precision, precision_reason=self.precision_reason,
                       memory_format=self.memory_format,
                       eval_precision=self.precision if self.device.type == "cuda" else "fp32",
                       **(extra or {}))
        if self.main:
            atomic_write_bytes(self.out / FINAL_MODEL,
                                lambda f: torch.save(self.model.state_dict(), f))
            atomic_write_json(self.out / SUMMARY, summary)
            if not keep_checkpoint:
                (self.out / CHECKPOINT).unlink(missing_ok=True)
        D.barrier()
        if summary["constant_predictions"]:
            say(f"{self.out}: warning: every test image got the same prediction after the "
                "last epoch: the network's output does not depend on its input (vanishing "
                "activations of a default-init model, too high a learning rate, or masks that "
                "cut the network)")
        say(f"{self.out}: finished, final test acc {summary['final_test_acc']}, "
            f"best {summary['best_test_acc']} (epoch {summary['best_epoch']})")
        return summary

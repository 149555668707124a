"""Train a sparse model with its masks held fixed: recipes, AMP, checkpoint/resume, JSON-lines log.

A run folder holds ``checkpoint.pt`` (written atomically after every epoch, removed at the end
unless ``keep_checkpoint``), ``metrics.jsonl`` (one line per epoch), and, once finished,
``model.pt`` (final state_dict) and ``summary.json``. Calling :func:`train` again on the same
folder resumes after the last finished epoch, bitwise identically on CPU, or, when
``summary.json`` exists, returns it without training.

Randomness: the data order and the crop/flip draws come from (seed, epoch, batch) streams (see
``pxprune.data.loader``); the global torch/numpy/python RNGs (dropout, say) are seeded from
``seed`` at the start and saved in / restored from every checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..analysis.flops import count_flops
from ..data.dataset import ImageDataset
from ..data.loader import iterate_batches, num_batches
from ..errors import TrainingError
from ..io import atomic_write_bytes as _atomic_write_bytes  # one helper for all
from ..io import atomic_write_text as _atomic_write_text
from ..io import load_tensors
from ..masks import Masks
from ..tempfiles import remove_stale_temps
from . import distributed as D
from .precision import (
    autocast,
    channels_last_works,
    memory_format_name,
    precision_choice,
    resolve_channels_last,
    resolve_precision,
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
]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
FINAL_MODEL = "model.pt"


# -- building blocks ---------------------------------------------------------------------------
def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over all of ``model``'s parameters (weight decay on all of them)."""
    params = model.parameters()
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum,
            nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay,
        )
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


def masks_fingerprint(masks: Masks | None) -> str:
    """SHA-256 of mask names, shapes and bits (checks that a resume uses the same masks)."""
    if masks is None:
        return "dense"
    h = hashlib.sha256()
    for name, m in masks.items():
        h.update(f"{name}:{tuple(m.shape)};".encode())
        h.update(np.packbits(m.reshape(-1).numpy()).tobytes())
    return h.hexdigest()


class _Rezero:
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


def _precision(device: torch.device, recipe: Recipe) -> str:
    """The recipe's precision resolved on ``device`` (fp32, bf16 or fp16)."""
    return resolve_precision(recipe.precision, device, recipe.amp, recipe.amp_dtype)


# Recipe fields a checkpoint is not compared on: their resolved values are checked instead.
_RESOLVED_FIELDS = ("precision", "channels_last")


def _comparable(recipe: dict) -> dict:
    """A recipe dict without the fields resolved per device (older checkpoints lack them)."""
    return {k: v for k, v in recipe.items() if k not in _RESOLVED_FIELDS}


def _resumed_setting(ckpt: dict, key: str, requested: object, resolved: str, path: Path) -> str:
    """The checkpoint's resolved ``key`` when the recipe left it automatic, else ours (checked)."""
    saved = ckpt.get(key)
    if saved is None or saved == resolved:
        return resolved
    if requested in ("auto", None):
        return saved
    raise TrainingError(f"{path} was trained with {key} {saved!r}, now {resolved!r} is asked; "
                     f"use a new out_dir or delete the checkpoint")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    recipe: Recipe | None = None,
) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy of ``model`` (eval mode) on ``dataset``.

    When distributed, each rank scores a contiguous share and the sums are all-reduced, so every
    rank returns the same numbers. ``recipe`` only decides autocast: CUDA AMP as the
    recipe says; on CPU evaluation is fp32 (bf16 is a training speed-up; accuracies are
    measured in full precision).
    """
    device = torch.device(device)
    model = D.unwrap(model)
    was_training = model.training
    model.eval()
    lo, hi = D.shard_range(len(dataset), D.get_rank(), D.get_world_size())
    part = dataset.subset(torch.arange(lo, hi)) if (lo, hi) != (0, len(dataset)) else dataset
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    predicted = torch.zeros(0, dtype=torch.bool, device=device)  # which classes were predicted
    precision = _precision(device, recipe) if recipe is not None else "fp32"
    amp = autocast(device, precision if device.type == "cuda" else "fp32")
    try:
        for x, y in iterate_batches(part, batch_size, shuffle=False, device=device):
            with amp:
                out = model(x)
            out = out.float()
            loss_sum += nn.functional.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
            if predicted.numel() < out.shape[1]:
                predicted = torch.zeros(out.shape[1], dtype=torch.bool, device=device)
            predicted[out.argmax(1)] = True
    finally:
        model.train(was_training)
    loss, corr, n = D.all_reduce_sum([loss_sum.item(), correct.item(), hi - lo])
    return {"loss": loss / max(n, 1), "acc": 100.0 * corr / max(n, 1), "count": int(n),
            "classes_predicted": int(predicted.sum())}


def _rng_state(device: torch.device) -> dict:
    """The global RNG states a resume must restore (torch, numpy, python, CUDA)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # stored as a tensor: weights_only
    state = {"torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    """Restore what :func:`_rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    keys = keys.cpu().numpy() if torch.is_tensor(keys) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _step_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, skips_allowed: bool) -> None:
    """Advance the lr schedule one step. With fp16, GradScaler skips the optimiser steps whose
    gradients overflowed and torch then warns that the schedule moved first; the schedule is
    meant to follow the batches, so that warning is silenced (fp16 only)."""
    if not skips_allowed:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`",
                                category=UserWarning)
        scheduler.step()


def _steps_per_epoch(n: int, batch_size: int, world: int) -> int:
    """Optimiser steps in one epoch (global batches with at least one example per rank)."""
    steps = num_batches(n, batch_size)
    if world > 1 and n % batch_size and n % batch_size < world:
        steps -= 1
    return steps


def _flops(model: nn.Module, shape: tuple[int, ...], masks: Masks | None) -> dict | None:
    """Dense and kept MACs (pxprune.analysis.flops), or the error that stopped the count."""
    try:
        f = count_flops(model, shape, masks)
    except Exception as exc:  # a model the counter cannot trace must not fail a finished run
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {k: f[k] for k in ("dense_macs", "kept_macs", "density_macs") if k in f}


# -- the loop ----------------------------------------------------------------------------------
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
    """
    out = Path(out_dir)
    device = torch.device(device)
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    rank, world = D.get_rank(), D.get_world_size()
    main = rank == 0
    say: Callable[[str], object] = (log or (lambda _m: None)) if main else (lambda _m: None)

    summary_path = out / SUMMARY
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        final = out / FINAL_MODEL
        if final.exists():
            model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
        say(f"{out}: already finished (summary.json exists), not training again; "
            f"final test acc {summary.get('final_test_acc')}")
        return summary

    if main:
        out.mkdir(parents=True, exist_ok=True)
    D.barrier()

    model.to(device)
    if world > 1:
        has_masks = D.broadcast_object(masks is not None)
        masks = D.broadcast_masks(masks) if has_masks else None
    handle = masks.attach(model) if masks is not None else None  # zero now + gradient hooks
    rezero = _Rezero(model, masks) if masks is not None else None
    fingerprint = masks_fingerprint(masks)

    spe = _steps_per_epoch(len(train_set), recipe.batch_size, world)
    if spe < 1:
        raise TrainingError(f"training set of {len(train_set)} examples gives no batch")
    precision, precision_reason = precision_choice(recipe.precision, device, recipe.amp,
                                                   recipe.amp_dtype, model)
    channels_last = resolve_channels_last(recipe.channels_last, device, precision)
    if channels_last and recipe.channels_last is None:  # the automatic choice, only where the
        # model's code takes channels-last tensors (a user's x.view(n, -1) does not)
        sample = next(iterate_batches(train_set, 2, shuffle=False, device=device))[0]
        channels_last = channels_last_works(model, sample)
        if not channels_last:
            say("the model's forward fails on channels-last tensors (e.g. x.view): training "
                "in the contiguous layout")
    ckpt_path = out / CHECKPOINT
    ckpt = None
    if ckpt_path.exists():
        # on the CPU: load_state_dict moves weights and optimiser state to the model's device,
        # and the RNG states must stay CPU tensors
        ckpt = load_tensors(ckpt_path, "the training checkpoint", map_location="cpu",
                            hint="delete it to restart training from epoch 0")
        resumed = _resumed_setting(ckpt, "precision", recipe.precision, precision, ckpt_path)
        if resumed != precision:
            precision_reason = f"resumed in the checkpoint's {resumed} (auto now says {precision})"
        precision = resumed
        fmt = _resumed_setting(ckpt, "memory_format", recipe.channels_last,
                               memory_format_name(channels_last), ckpt_path)
        channels_last = fmt == "channels_last"
    if channels_last:  # 4-d weights NHWC; the optimiser state follows their layout
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, spe)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    history: list[dict] = []
    start = 0
    if ckpt is not None:
        for key, mine in (("recipe", _comparable(recipe.to_dict())), ("seed", seed),
                          ("masks", fingerprint), ("world_size", world)):
            theirs = _comparable(ckpt[key]) if key == "recipe" else ckpt[key]
            if theirs != mine:
                raise TrainingError(
                    f"{ckpt_path} was written with another {key} ({theirs!r}, now {mine!r}); "
                    f"use a new out_dir or delete the checkpoint"
                )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler.is_enabled() and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        history = list(ckpt["history"])
        start = int(ckpt["epoch"])
        if rezero is not None:
            rezero()
        say(f"{out}: resuming after epoch {start}/{recipe.epochs} ({precision}, "
            f"{memory_format_name(channels_last)})")
    else:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
    net = D.wrap_ddp(model, device, sync_bn=sync_bn) if world > 1 else model
    if main:  # metrics.jsonl always agrees with the checkpoint (a kill may have split them)
        remove_stale_temps(out)  # a checkpoint half-written by a killed run
        _atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in history))

    epochs_bar = tqdm(range(start, recipe.epochs), desc="epochs", disable=not (progress and main),
                      initial=start, total=recipe.epochs)
    try:
        for epoch in epochs_bar:
            t0 = time.perf_counter()
            net.train()
            lr = optimizer.param_groups[0]["lr"]
            if world > 1:
                batches = D.shard_batches(
                    train_set, recipe.batch_size, rank=rank, world_size=world, seed=seed,
                    epoch=epoch, augment=recipe.augment, device=device,
                )
            else:
                batches = iterate_batches(train_set, recipe.batch_size, shuffle=True, seed=seed,
                                          epoch=epoch, augment=recipe.augment, device=device)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            bar = tqdm(batches, total=spe, desc=f"epoch {epoch + 1}/{recipe.epochs}", leave=False,
                       disable=not (progress and main))
            for x, y in bar:
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(device, precision):
                    logits = net(x)
                    loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if rezero is not None:
                    rezero()
                _step_schedule(scheduler, skips_allowed=scaler.is_enabled())
                n = y.numel()
                loss_sum += loss.detach().double() * n
                correct += (logits.detach().argmax(1) == y).sum()
                seen += n
            train_seconds = time.perf_counter() - t0
            if world > 1:
                D.average_buffers(model)
            tl, tc, tn = D.all_reduce_sum([loss_sum.item(), correct.item(), seen])
            train_seconds = max(D.all_reduce_max([train_seconds])[0], 1e-9)  # the slowest rank
            record: dict = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": tl / max(tn, 1),
                "train_acc": 100.0 * tc / max(tn, 1),
            }
            if not math.isfinite(record["train_loss"]):
                raise FloatingPointError(
                    f"training diverged in epoch {epoch + 1}: train loss {record['train_loss']} "
                    f"(lr {lr:.4g}); the last good checkpoint is kept in {out}"
                )
            if test_set is not None:
                ev = evaluate(net, test_set, batch_size=recipe.eval_batch_size, device=device,
                              recipe=recipe)
                record.update(test_loss=ev["loss"], test_acc=ev["acc"],
                              test_classes_predicted=ev["classes_predicted"])
            else:
                record.update(test_loss=None, test_acc=None)
            record["seconds"] = D.all_reduce_max([time.perf_counter() - t0])[0]
            record["images_per_s"] = tn / train_seconds
            history.append(record)
            if main:
                state = {
                    "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "rng": _rng_state(device), "history": history,
                    "recipe": recipe.to_dict(), "seed": seed, "masks": fingerprint,
                    "world_size": world, "precision": precision,
                    "memory_format": memory_format_name(channels_last),
                }
                _atomic_write_bytes(ckpt_path, lambda f, s=state: torch.save(s, f))
                with open(out / METRICS, "a") as f:
                    f.write(json.dumps(record) + "\n")
            D.barrier()
            test_msg = (f" test_loss {record['test_loss']:.4f} test_acc {record['test_acc']:.2f}"
                        if test_set is not None else "")
            say(f"epoch {epoch + 1}/{recipe.epochs} lr {lr:.4g} "
                f"train_loss {record['train_loss']:.4f} train_acc {record['train_acc']:.2f}"
                f"{test_msg} ({record['seconds']:.1f}s, {record['images_per_s']:.0f} img/s)")
            if callback is not None:
                callback(record)
    finally:
        epochs_bar.close()
        if handle is not None:
            handle.remove()
    summary = _summary(model, masks, train_set, history, recipe, seed, world, device,
                       fingerprint)
    summary["recipe"]["amp_dtype"] = {"fp16": "float16", "bf16": "bfloat16"}.get(precision)
    summary.update(precision=precision, precision_reason=precision_reason,
                   memory_format=memory_format_name(channels_last),
                   eval_precision=precision if device.type == "cuda" else "fp32")
    if main:
        _atomic_write_bytes(out / FINAL_MODEL, lambda f: torch.save(model.state_dict(), f))
        _atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
        if not keep_checkpoint and ckpt_path.exists():
            ckpt_path.unlink()
    D.barrier()
    if summary["constant_predictions"]:
        say("warning: every test image got the same prediction after the last epoch: the "
            "network's output does not depend on its input (vanishing activations of a "
            "default-init model, too high a learning rate, or masks that cut the network)")
    say(f"{out}: finished, final test acc {summary['final_test_acc']}, "
        f"best {summary['best_test_acc']} (epoch {summary['best_epoch']})")
    return summary


def _summary(
    model: nn.Module, masks: Masks | None, train_set: ImageDataset, history: list[dict],
    recipe: Recipe, seed: int, world: int, device: torch.device, fingerprint: str,
) -> dict:
    """The summary.json content of a finished run."""
    accs = [(r["test_acc"], r["epoch"]) for r in history if r.get("test_acc") is not None]
    best = max(accs, key=lambda a: a[0]) if accs else (None, None)
    total_params = sum(p.numel() for p in model.parameters())
    if masks is not None:
        kept, prunable = masks.kept, masks.total
    else:
        kept = prunable = Masks.ones(model).total
    last = history[-1] if history else {}
    return {
        "final_test_acc": last.get("test_acc"),
        "final_test_loss": last.get("test_loss"),
        "final_train_loss": last.get("train_loss"),
        "best_test_acc": best[0],
        "best_epoch": best[1],
        # one class predicted for every test image: the accuracy says nothing of the masks
        "constant_predictions": last.get("test_classes_predicted") == 1,
        "epochs": len(history),
        "kept_params": kept,
        "total_params": prunable,
        "density": kept / prunable if prunable else 1.0,
        "model_params": total_params,
        "model_params_kept": total_params - (prunable - kept),
        "collapsed_layers": masks.collapsed_layers() if masks is not None else [],
        "flops": _flops(model, tuple(train_set.image_shape), masks),
        "train_seconds": sum(r["seconds"] for r in history),
        "recipe": recipe.to_dict(),
        "seed": seed,
        "world_size": world,
        "device": str(device),
        "masks_sha256": fingerprint,
    }

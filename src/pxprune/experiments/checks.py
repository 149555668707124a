"""Checks the commands run before long work: inputs that fit the model, resumes, threads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..batches import as_batches, check_batches
from ..data import DataError
from ..errors import DamagedFileError, PxpruneError
from ..masks import Masks, PruningError, check_model_device
from ..pathview.reach import output_reach


def _device(model: nn.Module) -> torch.device:
    """Where the model's weights are (inputs are moved there before a check's forward)."""
    return next(model.parameters(), torch.empty(0)).device


@torch.no_grad()
def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                 num_classes: int | None = None) -> None:
    """The API's data checks (``batches.check_batches``: pixels, channels, size, label type),
    then labels within the model's outputs and ``num_classes``, named as command-line options."""
    check_model_device(model)
    try:  # the API's checks, reported as the data errors they are
        batches = as_batches(x if y is None else (x, y))
        outputs = check_batches(model, [(x, None) for x, _ in batches])
    except PruningError as exc:
        raise DataError(str(exc)) from None
    y = batches[0][1]
    if y is None or y.numel() == 0:
        return
    hi = int(y.max())
    if outputs is not None and hi >= outputs:
        raise DataError(f"labels go up to {hi} but the model has {outputs} outputs; give "
                        f"--num-classes {hi + 1} or relabel the data to 0..{outputs - 1}")
    if num_classes is not None and hi >= num_classes:
        raise DataError(f"labels go up to {hi} but there are {num_classes} classes")


def log_threads(device: str, log: Callable[[str], object]) -> None:
    """Say how many CPU threads the work uses (timings depend on it and on other load)."""
    if str(device).startswith("cpu"):
        log(f"using {torch.get_num_threads()} CPU thread(s) (set OMP_NUM_THREADS or "
            f"torch.set_num_threads to change; timings assume an otherwise idle machine)")


def log_resume(checkpoint: Path, log: Callable[[str], object]) -> int:
    """Say that a pruning resumes after round N when ``checkpoint`` holds N rounds; returns N
    (0 without a readable checkpoint)."""
    if not checkpoint.is_file():
        return 0
    try:
        from safetensors import safe_open

        with safe_open(str(checkpoint), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("extra", "{}"))
        done, rounds = int(meta["done_rounds"]), meta.get("rounds")
    except Exception:  # noqa: BLE001 - prune() itself reports an unreadable checkpoint
        return 0
    log(f"{checkpoint.parent}: resuming the pruning after round {done}"
        + (f" of {rounds}" if rounds else ""))
    return done


def check_connected(model: nn.Module, x: torch.Tensor, masks, method: str) -> tuple[int, int]:
    """Refuse masks that cut every path of kept weights from input to output, judged on the
    masks themselves (``pathview.reach``: exact, whatever the weights, BatchNorm statistics or
    precision); ``x`` gives the input's shape. Empty layers are named. Returns ``(reached,
    total)`` outputs, for the caller to flag masks that leave some logits constant."""
    reached, total = output_reach(model, masks, x[:1].to(_device(model)))
    if reached == 0:
        empty = masks.collapsed_layers()
        named = f" (empty: {', '.join(empty[:4])}{' ...' if len(empty) > 4 else ''})" \
            if empty else ""
        raise PxpruneError(f"{method} kept {masks.kept:,} of {masks.total:,} weights and the "
                           f"masks disconnect the output from the input{named}; lower the "
                           f"sparsity, or pass --allow-disconnected to keep such masks")
    return reached, total


def read_prune_record(path: Path) -> dict:
    """A run folder's ``prune.json``; a truncated or foreign one is one line naming it."""
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        info = None
    if not isinstance(info, dict) or any(
            not isinstance(info.get(k), int) or isinstance(info.get(k), bool)
            for k in ("kept", "total")):
        raise DamagedFileError(f"{path} is unreadable or not a pruning record; delete it and "
                               f"{path.with_name('masks.safetensors').name} to prune again")
    return info


def check_saved_masks(masks: Masks, model: nn.Module, info: dict, path: Path) -> None:
    """Refuse saved masks that lack a prunable tensor of the model (it would train dense),
    name another, differ in shape, or keep another count than ``prune.json`` records."""
    wanted = {n: tuple(m.shape) for n, m in Masks.ones(model).items()}
    fix = f"; delete it and {path.with_name('prune.json').name} to prune again"
    missing = [n for n in wanted if n not in masks]
    if missing:
        raise DamagedFileError(f"{path} has no mask for {len(missing)} of the model's "
                               f"{len(wanted)} prunable tensors (e.g. {missing[0]!r}){fix}")
    extra = [n for n in masks if n not in wanted]
    if extra:
        raise DamagedFileError(f"{path} holds a mask for {extra[0]!r}, not a prunable tensor "
                               f"of the model{fix}")
    shape = next((n for n in wanted if tuple(masks[n].shape) != wanted[n]), None)
    if shape is not None:
        raise DamagedFileError(f"{path}: the mask for {shape!r} has shape "
                               f"{tuple(masks[shape].shape)}, the model's tensor "
                               f"{wanted[shape]}{fix}")
    if (masks.kept, masks.total) != (info["kept"], info["total"]):
        raise DamagedFileError(f"{path} keeps {masks.kept:,} of {masks.total:,} weights but "
                               f"prune.json records {info['kept']:,} of {info['total']:,}{fix}")

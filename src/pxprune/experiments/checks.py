"""Checks the commands run before long work: inputs that fit the model, resumes, threads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data import DataError
from ..errors import PxpruneError
from ..masks import check_model_device


def _device(model: nn.Module) -> torch.device:
    """Where the model's weights are (inputs are moved there before a check's forward)."""
    return next(model.parameters(), torch.empty(0)).device


def input_channels(model: nn.Module) -> int | None:
    """The channel count the model's first convolution expects (None without one)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module.in_channels
        if isinstance(module, nn.Linear):
            return None  # a linear layer comes first: no channel dimension to check
    return None


@torch.no_grad()
def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                 num_classes: int | None = None) -> None:
    """Refuse images with another channel count than the model's, and labels outside
    ``[0, outputs)``, before any scoring (one line instead of a deep traceback)."""
    check_model_device(model)
    expected = input_channels(model)
    if expected is not None and x.dim() >= 2 and x.shape[1] != expected:
        raise DataError(f"the images have {x.shape[1]} channel(s) but the model's first "
                        f"convolution expects {expected}; convert the images (e.g. grey to "
                        f"RGB) or use a model for {x.shape[1]}-channel input")
    if y is None or y.numel() == 0:
        return
    if y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"labels must be integers, got {y.dtype}")
    was_training = model.training
    model.eval()
    try:
        out = model(x[:1].to(_device(model)))
    except RuntimeError as exc:  # a size the model cannot take
        first = (str(exc).splitlines() or [""])[0][:200]
        raise DataError(f"the model cannot take these images {tuple(x.shape[1:])}: "
                        f"{first}") from exc
    finally:
        model.train(was_training)
    outputs = out.shape[-1] if out.dim() >= 2 else None
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise DataError(f"labels must be >= 0, found {lo}")
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


@torch.no_grad()
def check_connected(model: nn.Module, x: torch.Tensor, masks, method: str) -> None:
    """Refuse masks (applied to ``model``) that cut every path from input to output: the
    masked network then gives the same output for different images. Empty layers are named."""
    if x.shape[0] < 2:
        return
    was_training = model.training
    model.eval()
    x = x[:4].to(_device(model))
    try:
        a = model(x)
        g = torch.Generator(device="cpu").manual_seed(0)
        b = model(x + torch.randn(x.shape, generator=g).to(x.device, x.dtype))
    finally:
        model.train(was_training)
    if torch.equal(a, b):
        empty = masks.collapsed_layers()
        named = f" (empty: {', '.join(empty[:4])}{' ...' if len(empty) > 4 else ''})" \
            if empty else ""
        raise PxpruneError(f"{method} kept {masks.kept:,} of {masks.total:,} weights and the "
                           f"masks disconnect the output from the input{named}; lower the "
                           f"sparsity, or pass --allow-disconnected to keep such masks")

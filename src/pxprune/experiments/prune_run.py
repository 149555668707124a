"""``pxprune prune``'s work: prune a model into a folder (config, per-layer table, masks).

A folder holding other work is refused before anything is loaded; ``config.json`` is written
before pruning (an interrupted multi-round pruning resumes), the masks last (all files
atomically), so a folder with ``masks.safetensors`` is finished and is not pruned again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..data.sampling import pruning_batch
from ..masks import Masks
from ..methods.spec import MethodSpec, resolved_spec
from ..models import IMAGENET_MEAN, IMAGENET_STD
from . import provenance
from .cell_lock import CellLock
from .checks import check_inputs, log_threads
from .config import PruneConfig, config_record
from .folder import claim, read_config, write_config
from .prune_cell import MASKS_FILE, clear_checkpoint, prune_cell_masks, save_masks
from .resolve import build_model, load_any_dataset, load_weights

# what the result does not depend on (the folder guard compares the rest with config.json)
NOT_IDENTITY = ("allow_disconnected",)


def prune_identity(cfg: PruneConfig) -> dict:
    """What makes two prunings the same: the configuration and the resolved method (``px`` ->
    ``px[variant=cvpr2024]``: a folder pruned under an older default is refused)."""
    return {**{k: v for k, v in asdict(cfg).items() if k not in NOT_IDENTITY},
            "resolved_method": resolved_spec(cfg.method)}


def prune_to_folder(cfg: PruneConfig, out: Path, *, device: str = "cpu", progress: bool = True,
                    log: Callable[[str], object] = print) -> dict:
    """Prune as ``cfg`` says into ``out``; returns the masks (and, when pruned now, the model,
    the dataset, the MACs and the seconds)."""
    identity = prune_identity(cfg)
    claim(out, "prune", identity)
    with CellLock(out):  # one writer: a second pruning into this folder is refused
        return _prune_claimed(cfg, Path(out), identity, device, progress, log)


def _prune_claimed(cfg: PruneConfig, out: Path, identity: dict, device: str, progress: bool,
                   log: Callable[[str], object]) -> dict:
    """:func:`prune_to_folder` in a folder this process holds."""
    if (out / MASKS_FILE).exists() and read_config(out) is not None:
        masks = Masks.load(out / MASKS_FILE)
        log(f"{out}: already finished ({cfg.method}: kept {masks.kept:,} of {masks.total:,} "
            f"weights); choose another --out to prune again")
        return {"masks": masks, "already_finished": True}
    dataset = load_any_dataset(cfg.dataset, "train")
    num_classes = cfg.num_classes or dataset.num_classes
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes, cfg.output)
    if cfg.weights:
        load_weights(model, cfg.weights)
    model.to(device)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if cfg.norm == "imagenet" else (None, None)
    x, y = pruning_batch(dataset, cfg.per_class, cfg.seed, mean, std)
    check_inputs(model, x, y, num_classes)
    write_config(out, config_record(
        "prune", asdict(cfg), provenance.record(), device=device,
        resolved_method=identity["resolved_method"], dataset_name=dataset.name,
        pruning_examples=int(len(y))))
    log_threads(device, log)
    # the final masks stay in the checkpoint until saved: refused as disconnected, they are
    # returned at once by the next command (e.g. with --allow-disconnected)
    cell = prune_cell_masks(model, MethodSpec.parse(cfg.method), cfg.sparsity, (x, y),
                            rounds=cfg.rounds, scope=cfg.scope, seed=cfg.seed,
                            keep_dense=cfg.keep_dense or (), folder=out, keep_checkpoint=True,
                            allow_disconnected=cfg.allow_disconnected, progress=progress,
                            log=log)
    masks = cell.masks
    flops, table = save_masks(out, masks, model, tuple(x.shape[1:]), {
        "method": cfg.method, "resolved_method": identity["resolved_method"],
        "sparsity": cfg.sparsity, "seed": cfg.seed, "model": cfg.model,
        "dataset": dataset.name, "keep_dense": cfg.keep_dense})
    clear_checkpoint(out)
    log(table)
    log(f"{cfg.method}: kept {masks.kept:,} of {masks.total:,} weights "
        f"(density {masks.density():.4f}) in {cell.seconds:.1f} s -> {out}")
    return {"masks": masks, "model": model, "dataset": dataset, "flops": flops,
            "seconds": cell.seconds}

"""``pxprune prune``: prune a model, write masks, config and the per-layer table."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from .. import __version__
from ..data.sampling import pruning_batch
from ..experiments.cell_lock import CellLock
from ..experiments.checks import check_inputs, log_threads
from ..experiments.folder import claim, left_as_found_on_failure, read_config, write_config
from ..experiments.provenance import cli_argv
from ..experiments.prune_cell import clear_checkpoint, prune_cell_masks, save_masks
from ..experiments.resolve import build_model, load_any_dataset, load_weights
from ..masks import Masks
from ..methods.spec import MethodSpec, resolved_spec
from ..models import IMAGENET_MEAN, IMAGENET_STD
from ..schedule import parse_sparsity
from .common import add_model_args

# what makes two prunings the same (the folder guard compares these with config.json)
PRUNE_IDENTITY = ("model", "output", "weights", "num_classes", "method", "rounds", "scope",
                  "seed", "per_class", "norm", "data", "keep_dense")


def prune_to_folder(args: argparse.Namespace, out: Path, log=print) -> dict:
    """Prune as the arguments say and write config, per-layer table and masks into ``out``.

    A folder holding other work is refused before anything is loaded; config.json is written
    before pruning (an interrupted multi-round pruning resumes), the masks last (all files
    atomically), so a folder with masks.safetensors is finished and is not pruned again.
    """
    sparsity = parse_sparsity(args.sparsity)
    # the resolved method (px -> px[variant=cvpr2024]): a folder pruned under an older
    # default has none recorded, or another one, and is refused
    identity = {**{k: getattr(args, k, None) for k in PRUNE_IDENTITY}, "sparsity": sparsity,
                "resolved_method": resolved_spec(args.method)}
    claim(out, "prune", identity)
    with CellLock(out):  # one writer: a second pruning into this folder is refused
        return _prune_claimed(args, out, sparsity, identity, log)


def _prune_claimed(args: argparse.Namespace, out: Path, sparsity: float, identity: dict,
                   log=print) -> dict:
    """:func:`prune_to_folder` in a folder this process holds."""
    if (out / "masks.safetensors").exists() and read_config(out) is not None:
        masks = Masks.load(out / "masks.safetensors")
        log(f"{out}: already finished ({args.method}: kept {masks.kept:,} of {masks.total:,} "
            f"weights); choose another --out to prune again")
        return {"masks": masks, "already_finished": True}
    dataset = load_any_dataset(args.data, "train")
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.num_classes or dataset.num_classes, args.output)
    if args.weights:
        load_weights(model, args.weights)
    model.to(args.device)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if args.norm == "imagenet" else (None, None)
    x, y = pruning_batch(dataset, args.per_class, args.seed, mean, std)
    check_inputs(model, x, y, args.num_classes or dataset.num_classes)
    config = {
        "command": "prune", "argv": cli_argv(), "pxprune": __version__,
        "torch": torch.__version__, "python": platform.python_version(),
        **{k: v for k, v in vars(args).items() if k != "func"},
        "sparsity": sparsity, "resolved_method": identity["resolved_method"],
        "dataset_name": dataset.name, "pruning_examples": int(len(y)),
    }
    write_config(out, config)
    log_threads(args.device, log)
    # the final masks stay in the checkpoint until saved: refused as disconnected, they are
    # returned at once by the next command (e.g. with --allow-disconnected)
    cell = prune_cell_masks(model, MethodSpec.parse(args.method), sparsity, (x, y),
                            rounds=args.rounds, scope=args.scope, seed=args.seed,
                            keep_dense=args.keep_dense or (), folder=out, keep_checkpoint=True,
                            allow_disconnected=args.allow_disconnected,
                            progress=not args.no_progress, log=log)
    masks, seconds = cell.masks, cell.seconds
    flops, table = save_masks(out, masks, model, tuple(x.shape[1:]), {
        "method": args.method, "resolved_method": identity["resolved_method"],
        "sparsity": sparsity, "seed": args.seed, "model": args.model,
        "dataset": dataset.name, "keep_dense": args.keep_dense})
    clear_checkpoint(out)
    log(table)
    log(f"{args.method}: kept {masks.kept:,} of {masks.total:,} weights "
        f"(density {masks.density():.4f}) in {seconds:.1f} s -> {out}")
    return {"masks": masks, "model": model, "dataset": dataset, "flops": flops,
            "seconds": seconds}


def cmd_prune(args: argparse.Namespace) -> int:
    with left_as_found_on_failure(args.out):
        prune_to_folder(args, Path(args.out))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pxprune prune``."""
    p = sub.add_parser("prune", help="prune a model and write masks + per-layer table")
    add_model_args(p)
    p.add_argument("--dataset", "--data", dest="data", default="cifar10",
                   help="dataset name or a .pt/.npz file")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_prune)

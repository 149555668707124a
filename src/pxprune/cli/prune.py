"""``pxprune prune``: prune a model, write masks, config and the per-layer table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments.config import PruneConfig
from ..experiments.folder import left_as_found_on_failure
from ..experiments.prune_run import prune_to_folder
from ..schedule import parse_sparsity
from .common import add_model_args


def prune_config_from_args(args: argparse.Namespace) -> PruneConfig:
    """The PruneConfig of parsed ``pxprune prune`` arguments."""
    return PruneConfig(
        model=args.model, dataset=args.dataset, method=args.method,
        sparsity=parse_sparsity(args.sparsity), seed=args.seed, rounds=args.rounds,
        scope=args.scope, per_class=args.per_class, norm=args.norm, weights=args.weights,
        num_classes=args.num_classes, output=args.output, keep_dense=args.keep_dense,
        allow_disconnected=args.allow_disconnected)


def cmd_prune(args: argparse.Namespace) -> int:
    """Entry point of ``pxprune prune``."""
    with left_as_found_on_failure(args.out):
        prune_to_folder(prune_config_from_args(args), Path(args.out), device=args.device,
                        progress=not args.no_progress)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pxprune prune``."""
    p = sub.add_parser("prune", help="prune a model and write masks + per-layer table")
    add_model_args(p, PruneConfig)
    p.add_argument("--dataset", "--data", default=PruneConfig.dataset,
                   help="dataset name or a .pt/.npz file")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_prune)

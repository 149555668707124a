"""``pxprune run``: prune + train + evaluate one resumable run folder (torchrun too)."""

from __future__ import annotations

import argparse
import json

from ..experiments.checks import log_threads
from ..experiments.folder import left_as_found_on_failure
from ..experiments.run import run_experiment
from ..training.distributed import cleanup, init_distributed
from .common import add_training_args, config_from_args, show_progress


def cmd_run(args: argparse.Namespace) -> int:
    info = init_distributed(device=args.device)  # torchrun: one process per device
    cfg = config_from_args(args)
    if info.rank == 0:
        log_threads(str(info.device), print)
    try:
        with left_as_found_on_failure(args.out):  # a failed start leaves no config behind
            summary = run_experiment(cfg, args.out, device=str(info.device),
                                     progress=show_progress(args) and info.rank == 0)
    finally:
        cleanup()
    if info.rank == 0:
        keys = ("final_test_acc", "best_test_acc", "density", "collapsed_layers")
        print(json.dumps({k: summary.get(k) for k in keys}, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pxprune run``."""
    p = sub.add_parser("run", help="prune + train + evaluate into a resumable run folder")
    add_training_args(p)
    p.add_argument("--masks", default=None, metavar="FILE_OR_FOLDER",
                   help="train these masks instead of pruning: a masks file (pxprune prune, "
                        "Masks.save) or a pxprune prune folder; checked against the model, "
                        "recorded by content hash, method and sparsity taken from the file")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_run)

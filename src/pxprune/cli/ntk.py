"""``pxprune ntk``: the NTK kept by each method at initialisation, over sparsities."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import torch

from ..experiments.config import NtkConfig, defaults_of
from ..experiments.ntk_study import run_ntk, trace_table

DEFAULTS = defaults_of(NtkConfig)  # the options' defaults (NtkConfig's)


def ntk_config_from_args(args: argparse.Namespace) -> NtkConfig:
    """The NtkConfig of parsed ``pxprune ntk`` arguments."""
    return NtkConfig(**{f.name: getattr(args, f.name) for f in fields(NtkConfig)})


def cmd_ntk(args: argparse.Namespace) -> int:
    """Run (or resume) the study from parsed ``pxprune ntk`` arguments; print the tables."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ntk_config_from_args(args)
    results = run_ntk(cfg, args.out, plots=not args.no_plots, progress=not args.no_progress)
    for key, title in (("trace_ratio", "NTK trace ratio (sparse / dense)"),
                       ("lambda_max_ratio", "top eigenvalue ratio (sparse / dense)")):
        print(f"\n{title}\n{trace_table(results, key)}")
    print("\nThe NTK is measured with BatchNorm in eval mode (running statistics; a model at "
          "initialisation has mean 0, variance 1), dropout off.")
    for warning in results.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    out = Path(args.out)
    print(f"\nwrote {out / (args.stem + '.json')}"
          + ("" if args.no_plots else f", {args.stem}.png, {args.stem}_spectrum.png"))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pxprune ntk`` (its own arguments: no --method there, --methods instead)."""
    p = sub.add_parser("ntk", help="NTK trace, top eigenvalues and PX bound kept by each "
                                   "method at init, over a sparsity grid (resumable)")
    p.add_argument("--model", default=DEFAULTS["model"],
                   help="built-in name (e.g. resnet20) or package.module:function (called "
                        "with num_classes=N when it takes it)")
    p.add_argument("--output", default=DEFAULTS["output"],
                   help="for a model that returns several outputs: which one is the logits, "
                        "an index (0) or a key (logits)")
    p.add_argument("--dataset", "--data", default=DEFAULTS["dataset"],
                   help="dataset name (train and test splits)")
    p.add_argument("--methods", default=DEFAULTS["methods"],
                   help="comma-separated methods, or 'all' (every method but IMP)")
    p.add_argument("--sparsities", default=DEFAULTS["sparsities"],
                   help="'paper' (36.00 ... 98.20 %%, nine points) or a list: 0.9,98.2%%")
    p.add_argument("--rounds", type=int, default=DEFAULTS["rounds"],
                   help="rounds of the iterative methods (default: each method's own)")
    p.add_argument("--n-images", type=int, default=DEFAULTS["n_images"],
                   help="test images the NTK is measured on (class-balanced)")
    p.add_argument("--per-class", type=int, default=DEFAULTS["per_class"],
                   help="pruning split size per class")
    p.add_argument("--top-k", type=int, default=DEFAULTS["top_k"], help="top eigenvalues to record")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="drives init and both data splits")
    p.add_argument("--chunk", type=int, default=DEFAULTS["chunk"],
                   help="samples per Jacobian chunk (memory)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--stem", default=DEFAULTS["stem"], help="file names: STEM.json, STEM.png, ...")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="output folder (re-run to resume)")
    p.set_defaults(func=cmd_ntk)

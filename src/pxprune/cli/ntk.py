"""``pxprune ntk``: the NTK kept by each method at initialisation, over sparsities."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..experiments.ntk_study import run_ntk_study, trace_table


def cmd_ntk(args: argparse.Namespace) -> int:
    """Run (or resume) the study from parsed ``pxprune ntk`` arguments; print the tables."""
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run_ntk_study(
        args.model, args.dataset, args.methods, args.sparsities, args.out,
        n_images=args.n_images, per_class=args.per_class, seed=args.seed, top_k=args.top_k,
        rounds=args.rounds, stem=args.stem, chunk=args.chunk, plots=not args.no_plots,
        progress=not args.no_progress, output=args.output,
    )
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
    p.add_argument("--model", default="resnet20",
                   help="built-in name (e.g. resnet20) or package.module:function (called "
                        "with num_classes=N when it takes it)")
    p.add_argument("--output", default=None,
                   help="for a model that returns several outputs: which one is the logits, "
                        "an index (0) or a key (logits)")
    p.add_argument("--dataset", "--data", default="cifar10",
                   help="dataset name (train and test splits)")
    p.add_argument("--methods", default="all",
                   help="comma-separated methods, or 'all' (every method but IMP)")
    p.add_argument("--sparsities", default="paper",
                   help="'paper' (36.00 ... 98.20 %%, nine points) or a list: 0.9,98.2%%")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds of the iterative methods (default: each method's own)")
    p.add_argument("--n-images", type=int, default=20,
                   help="test images the NTK is measured on (class-balanced)")
    p.add_argument("--per-class", type=int, default=10, help="pruning split size per class")
    p.add_argument("--top-k", type=int, default=20, help="top eigenvalues to record")
    p.add_argument("--seed", type=int, default=0, help="drives init and both data splits")
    p.add_argument("--chunk", type=int, default=4, help="samples per Jacobian chunk (memory)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--stem", default="ntk", help="file names: STEM.json, STEM.png, ...")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="output folder (re-run to resume)")
    p.set_defaults(func=cmd_ntk)

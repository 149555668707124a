"""NTK study on CPU: ResNet-20 at init, CIFAR-10 (JPEG copy), every foresight method, paper grid.

For each of the seven foresight methods (PX, SNIP, SynFlow, Random, Magnitude, GraSP, NTK-SAP) and
each of the nine paper sparsities (36.00 ... 98.20 %), prune the same initialisation on the
seeded pruning split (10 training images per class) and measure the empirical NTK (trace, top
eigenvalues) and PX's path bound on 20 test images (2 per class; K = 10 outputs: an exact
200 x 200 kernel), relative to the dense net.

Rounds: every method runs its default number of rounds (PX and SynFlow 100, NTK-SAP 20, the
others one-shot), as in the paper; ``--rounds N`` gives every iterative method N instead. The
rounds are recorded in the JSON's config and per cell. A PX cell at 100 rounds costs about 45 s
of one CPU core (much more wall time on a busy shared machine); the whole study about 15 min.

    .venv/bin/python benchmarks/ntk_resnet20.py            # resumes: finished cells are skipped

Writes benchmarks/results/ntk_resnet20.json, ntk_resnet20.png, ntk_resnet20_spectrum.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from pxprune.experiments.ntk_study import run_ntk_study, trace_table

ROOT = Path(__file__).resolve().parent
METHODS = ("px", "snip", "synflow", "random", "magnitude", "grasp", "ntksap")


def main() -> None:
    """Run (or resume) the study and print the trace-ratio table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--sparsities", default="paper")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of every iterative method (default: each method's own)")
    ap.add_argument("--n-images", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: one core, predictable timings
    t0 = time.perf_counter()
    results = run_ntk_study(
        "resnet20", "cifar10", args.methods, args.sparsities, args.out,
        n_images=args.n_images, per_class=10, seed=args.seed, top_k=args.top_k,
        rounds=args.rounds, stem="ntk_resnet20",
        meta={"dataset": "CIFAR-10 (JPEG copy)",
              "rounds_note": f"--rounds {args.rounds}" if args.rounds else
                             "method defaults (PX/SynFlow 100, NTK-SAP 20, others 1)",
              "command": " ".join([".venv/bin/python", *sys.argv])},
    )
    print(trace_table(results))
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

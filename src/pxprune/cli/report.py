"""``pxprune report``: tables and figure of a (partial) sweep."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..experiments import report
from ..experiments.provenance import cli_argv
from ..experiments.report.collect import METRICS
from ..experiments.report.paired import PAPER
from ..experiments.report.tables import format_text_table
from ..experiments.report.write import write_report


def cmd_report(args: argparse.Namespace) -> int:
    """Print the table and write the report files; exit 0 even for partial sweeps."""
    command = "pxprune " + shlex.join(cli_argv())
    result = write_report(args.sweep_dir, args.out, metric=args.metric, title=args.title,
                          results_path=args.results, report_command=command,
                          notes=args.note, paired=args.paired, paper=args.paper)
    print(format_text_table(result))
    out = Path(args.out or args.sweep_dir)
    print(f"wrote {out / 'report.md'}, report.tex, report.csv, report.png (and the per-layer "
          "density and training-curve figures where the cells hold them), report.json"
          + (f" and {args.results}" if args.results else ""))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pxprune report`` (its description: the report module's own docstring)."""
    p = sub.add_parser("report", help="tables and figure of a (partial) sweep",
                       description=report.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="a folder written by pxprune sweep")
    p.add_argument("--out", default=None, help="where to write the report (default: sweep_dir)")
    p.add_argument("--results", default=None,
                   help="also write the results JSON here (e.g. benchmarks/results/NAME.json)")
    p.add_argument("--metric", choices=tuple(METRICS), default="final",
                   help="final-epoch (default) or best-epoch test accuracy")
    p.add_argument("--title", default=None, help="figure and report title")
    p.add_argument("--note", action="append", default=[],
                   help="a remark for report.md and the results JSON (repeatable)")
    p.add_argument("--paired", default=None, metavar="METHOD",
                   help="add a section pairing METHOD (e.g. px) by seed against every other "
                        "method, with empty layers and density per block of layers")
    p.add_argument("--paper", choices=tuple(PAPER), default=None,
                   help="with --paired: the paper's figure values in brackets (fig2a: "
                        "ResNet-20 / CIFAR-10 from scratch; fig3: ImageNet ResNet-50 fine-tuned "
                        "on CIFAR-10)")
    p.set_defaults(func=cmd_report)




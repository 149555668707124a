"""``pxprune sweep``: a grid of resumable runs (method x sparsity x seed); also registers report.

Every cell is one ``pxprune run`` folder under OUT (e.g. OUT/px/s98.20/seed0); OUT/sweep.json
holds the grid, the protocol and every invocation. A finished cell is skipped, an interrupted one
resumes, a failing one is recorded (error.json) while the others go on: run the same command
again to finish a sweep.

Launchers (the same cells, the same folders):
  --launcher local      (default) this machine, --jobs K cells at once as processes; on one GPU
                        the K trainings share it, with --device cuda on several GPUs they are
                        spread round-robin.
  --launcher submitit   one Slurm job array, one task per unfinished cell (pip install
                        'pxprune[cluster]'); --slurm-time, --slurm-partition,
                        --slurm-gpus-per-job, --slurm-cpus-per-task, --slurm-mem, and any
                        --slurm-KEY=VALUE passed to sbatch. The command returns once the jobs
                        are queued (--wait: stays until they end); a job Slurm stops at its time
                        limit is requeued and resumes. --submitit-cluster local runs the jobs as
                        local processes through submitit (a dry run without Slurm).
  --status OUT          done / running / failed / pending counts, read from the cell folders.
Then: pxprune report OUT (table and figure, also of a partial sweep).
"""

from __future__ import annotations

import argparse
import sys

from ..experiments.config import DENSE, TRANSFER_ONLY, RunConfig, defaults_of
from ..experiments.report.collect import collect
from ..experiments.report.tables import format_text_table
from ..experiments.resolve import UsageError
from ..experiments.sweep.grid import DEFAULT_METHODS
from ..experiments.sweep.local import run_sweep
from ..experiments.sweep.slurm import (
    CLUSTERS,
    EXTRA_PREFIX,
    SlurmOptions,
    parse_extra,
    parse_mem_gb,
    parse_slurm_time,
)
from ..experiments.sweep.stack import default_stack
from ..experiments.sweep.status import format_status, sweep_status
from ..experiments.sweep.submit import submit_sweep
from ..experiments.transfer_sweep import run_transfer_sweep
from ..masks import PruningError
from ..methods.spec import split_method_list
from ..schedule import parse_sparsities
from .common import add_training_args, config_from_args, show_progress
from .transfer import add_transfer_args, transfer_config_from_args

LAUNCHERS = ("local", "submitit")
# Options whose default depends on the sweep's kind (None in the parser): training defaults.
TRAINING_DEFAULTS = {k: defaults_of(RunConfig)[k] for k in ("model", "norm")}
SLURM_DESTS = ("slurm_partition", "slurm_gpus_per_job", "slurm_time", "slurm_cpus_per_task",
               "slurm_mem")


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers: {text!r}") from None


def take_slurm_extras(args: argparse.Namespace, unknown: list[str]) -> list[str]:
    """Keep each ``--slurm-KEY=VALUE`` (or ``--slurm-KEY VALUE``) the parser did not know in
    ``args.slurm_extra`` (checked by :func:`pxprune.experiments.sweep.slurm.parse_extra`); return
    what is left, which the parser then refuses as usual. The sweep has no positional
    arguments, so a word after such an option is its value."""
    rest, i = [], 0
    while i < len(unknown):
        a = unknown[i]
        if a.startswith(EXTRA_PREFIX):
            if "=" not in a and i + 1 < len(unknown) and not unknown[i + 1].startswith("-"):
                a, i = f"{a}={unknown[i + 1]}", i + 1
            args.slurm_extra.append(a)
        else:
            rest.append(a)
        i += 1
    return rest


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    """The ``--slurm-*`` options as :class:`SlurmOptions` (values parsed and checked)."""
    return SlurmOptions(
        partition=args.slurm_partition, gpus_per_job=args.slurm_gpus_per_job,
        time_min=None if args.slurm_time is None else parse_slurm_time(args.slurm_time),
        cpus_per_task=args.slurm_cpus_per_task,
        mem_gb=None if args.slurm_mem is None else parse_mem_gb(args.slurm_mem),
        extra=parse_extra(args.slurm_extra))


def _check_launcher_flags(args: argparse.Namespace) -> None:
    """Refuse options of the other launcher (one-line UsageError)."""
    slurm_given = [d for d in SLURM_DESTS if getattr(args, d) is not None] + args.slurm_extra
    if args.launcher == "local":
        if slurm_given:
            name = slurm_given[0] if slurm_given[0].startswith("--") else (
                "--" + slurm_given[0].replace("_", "-"))
            raise UsageError(f"{name.split('=')[0]} applies only with --launcher submitit")
        if args.wait or args.submitit_cluster is not None:
            raise UsageError("--wait and --submitit-cluster apply only with --launcher submitit")
        return
    if args.transfer:
        raise UsageError("--launcher submitit does not apply with --transfer: the cells of a "
                         "seed share its data, backbone and dense reference in one process")
    if args.jobs != 1:
        raise UsageError("--jobs applies to --launcher local; with submitit every cell is its "
                         "own job (--slurm-array-parallelism=N limits how many run at once)")


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or submit) the grid; exit 1 when any cell failed (after every other cell ran)."""
    if args.status is not None:
        print(format_status(sweep_status(args.status)))
        return 0
    if args.out is None:
        raise UsageError("sweep needs --out DIR (or --status DIR)")
    try:
        methods = split_method_list(args.methods)
    except PruningError as exc:
        raise UsageError(str(exc)) from None
    if not methods:
        raise UsageError(f"--methods {args.methods!r} names no method (e.g. --methods "
                         f"px,snip,random,dense)")
    sparsities = parse_sparsities(args.sparsities)
    if not args.seeds:
        raise UsageError("--seeds names no seed")
    _check_launcher_flags(args)
    if args.transfer:
        record = run_from_args(args, methods, sparsities)
    else:
        check_transfer_flags(args)
        defaults = {k: v for k, v in TRAINING_DEFAULTS.items() if getattr(args, k) is None}
        if args.stack is None:
            args.stack = default_stack(args.device)
        base = config_from_args(argparse.Namespace(**{**vars(args), **defaults, "method": DENSE,
                                                      "sparsity": "0", "seed": 0}))
        if args.launcher == "submitit":
            record = submit_sweep(base, methods, sparsities, args.seeds, args.out,
                                  device=args.device, cluster=args.submitit_cluster or "slurm",
                                  slurm=slurm_options(args), threads=args.threads,
                                  wait=args.wait, stack=args.stack)
            if not args.wait:
                print(f"then: pxprune sweep --status {args.out}; when done: "
                      f"pxprune report {args.out}")
                return 0
        else:
            record = run_sweep(base, methods, sparsities, args.seeds, args.out,
                               device=args.device, jobs=args.jobs, threads=args.threads,
                               progress=show_progress(args), stack=args.stack)
    print(format_text_table(collect(args.out)))
    failed = record["invocations"][-1]["failed_cells"]
    if failed:
        print(f"pxprune sweep: {len(failed)} cell(s) failed (see error.json in each): "
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _add_launcher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "launchers", "where the cells run; every launcher runs the same resumable cells. Any "
        "other --slurm-KEY=VALUE (e.g. --slurm-account=abc, --slurm-qos=high, "
        "--slurm-array-parallelism=20, --slurm-exclusive) is passed to Slurm.")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: a process pool here (--jobs); submitit: one Slurm job per cell "
                        "(a job array; needs pxprune[cluster])")
    g.add_argument("--submitit-cluster", choices=CLUSTERS, default=None,
                   help="slurm (default), or local: the jobs as processes here, through submitit")
    g.add_argument("--wait", action="store_true",
                   help="submitit: stay until every job ended and record the outcomes")
    g.add_argument("--status", metavar="DIR", default=None,
                   help="print done / running / failed / pending counts of the sweep in DIR")
    g.add_argument("--slurm-time", default=None,
                   help="time limit per cell (90, 12:00:00, 2-00:00:00); required on Slurm")
    g.add_argument("--slurm-partition", default=None)
    g.add_argument("--slurm-gpus-per-job", type=int, default=None,
                   help="0 or 1 (default: 1 with --device cuda)")
    g.add_argument("--slurm-cpus-per-task", type=int, default=None,
                   help="also the cell's torch threads unless --threads")
    g.add_argument("--slurm-mem", default=None, help="memory per job: 32G, 500M (GB if no unit)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pxprune sweep``; its unknown ``--slurm-*`` options go to
    :func:`take_slurm_extras`."""
    p = sub.add_parser("sweep", help="run a method x sparsity x seed grid of resumable runs "
                                     "(training, or with --transfer pre-trained backbones; "
                                     "here or as Slurm jobs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, sweep=True)
    p.set_defaults(slurm_extra=[], take_unknown=take_slurm_extras)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated methods, each optionally with options, e.g. "
                        "px,px[variant=bound,bn=batch],snip[scope=layer]; add 'dense' for the "
                        "unpruned baseline (a transfer sweep always has it)")
    p.add_argument("--sparsities", default="paper",
                   help="'paper' (36.00 ... 98.20 %%) or a list: 0.9,98.2%%")
    p.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--jobs", type=int, default=1,
                   help="local launcher: cells run at once, one process each (they share one "
                        "GPU)")
    p.add_argument("--stack", type=int, default=None,
                   help="cells trained as one stacked computation on one device (same "
                        "model and recipe; each its own masks, init, data order, folder); "
                        "local: one process per stack, --jobs stacks at once; submitit: one "
                        "job per stack (default 1 on every device until a gain is measured: none "
                        "on a CPU; try 10 on a GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per cell (default: cpu_count // jobs with jobs > 1; "
                        "with submitit: --slurm-cpus-per-task)")
    p.add_argument("--out", default=None, help="sweep folder, e.g. sweeps/resnet20_cifar10")
    _add_launcher_args(p)
    g = p.add_argument_group(
        "transfer sweep", "--transfer: every cell is a `pxprune transfer` run (a pre-trained "
        "--backbone pruned for --dataset, then probed or fine-tuned; see "
        "pxprune.experiments.transfer_sweep). The options below apply only with --transfer; "
        "there --train-per-class and --test-per-class default to 100 and --recipe (with "
        "--mode finetune) to finetune_cpu, as in pxprune transfer.")
    g.add_argument("--transfer", action="store_true",
                   help="sweep transfer runs instead of training from scratch")
    add_transfer_args(g, sweep=True)
    p.set_defaults(func=cmd_sweep)


NOT_WITH_TRANSFER = {  # sweep options a transfer sweep does not take: dest -> why
    "model": "name the pre-trained network with --backbone",
    "schedule": "fine-tuning takes --recipe, --epochs, --lr and --batch-size",
}


def check_transfer_flags(args: argparse.Namespace) -> None:
    """Refuse options that do not fit the sweep's kind (one-line UsageError)."""
    if not args.transfer:
        given = [k for k in TRANSFER_ONLY if getattr(args, k, None) is not None]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} applies only with --transfer")
        return
    for dest, why in NOT_WITH_TRANSFER.items():
        if getattr(args, dest, None) is not None:
            raise UsageError(f"--{dest} does not apply with --transfer: {why}")
    if args.stack not in (None, 1):
        raise UsageError("--stack does not apply with --transfer")
    if args.jobs != 1:
        raise UsageError("--jobs does not apply with --transfer: the cells of a seed share its "
                         "data, backbone and dense reference in one process (use --threads)")
    if args.backbone is None:
        raise UsageError("--transfer needs --backbone (e.g. efficientnet_lite0, resnet56_a)")


def run_from_args(args: argparse.Namespace, methods: list[str],
                  sparsities: list[float]) -> dict:
    """``pxprune sweep --transfer``: check the options, then run the grid."""
    check_transfer_flags(args)
    first = next((m for m in methods if m != DENSE), "random")
    base = transfer_config_from_args(args, method=first, sparsity=max(sparsities),
                                     seed=args.seeds[0])
    return run_transfer_sweep(base, methods, sparsities, args.seeds, args.out,
                              device=args.device, threads=args.threads,
                              progress=show_progress(args))

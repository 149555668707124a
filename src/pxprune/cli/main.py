"""The ``pxprune`` command: prune, run, sweep, report, ntk, transfer, demo."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from .. import __version__
from .. import checkpoint as prune_checkpoint
from ..errors import USER_ERRNOS, PxpruneError, describe_os_error
from ..experiments.checks import (
    check_connected,
    check_inputs,
    log_resume,
    log_threads,
    show_progress,
)
from ..experiments.provenance import cli_argv, set_cli_argv
from ..masks import Masks
from ..methods import REGISTRY

# --------------------------------------------------------------------------------------------
# prune
# --------------------------------------------------------------------------------------------


def _common_prune_args(p: argparse.ArgumentParser) -> None:
    from ..models import NAMES

    p.add_argument("--model", default="resnet20",
                   help=f"a built-in name ({', '.join(NAMES)}) or package.module:function, "
                        f"which IMPORTS AND CALLS YOUR CODE (only name modules you trust)")
    p.add_argument("--weights", help="optional state_dict file to load before pruning (read "
                                     "with torch.load(weights_only=True): tensors only)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the dataset's number of classes)")
    p.add_argument("--method", default="px",
                   help=f"name or name[key=value,...], e.g. px, px[variant=bound], "
                        f"snip[rounds=10]; names: {', '.join(sorted(REGISTRY))}")
    p.add_argument("--sparsity", default="0.982",
                   help="fraction pruned, in [0, 1): 0.982 or 98.2%%")
    p.add_argument("--rounds", type=int, default=None,
                   help="pruning rounds (default: the method's, 100 for PX/SynFlow)")
    p.add_argument("--scope", choices=("global", "layer"), default="global",
                   help="one threshold over all layers, or the same density in every layer")
    p.add_argument("--seed", type=int, default=0, help="drives init, the pruning split, data order")
    p.add_argument("--per-class", type=int, default=10, help="pruning split size per class")
    p.add_argument("--norm", choices=("dataset", "imagenet"), default="dataset",
                   help="input normalisation (imagenet for the shared pre-trained CIFAR ResNets)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are off anyway when stderr is not a terminal)")
    p.add_argument("--allow-disconnected", action="store_true",
                   help="keep masks that cut every path from input to output (refused "
                        "otherwise; a sweep keeps them, flagged in each summary.json)")


# what makes two prunings the same (the folder guard compares these with config.json)
PRUNE_IDENTITY = ("model", "weights", "num_classes", "method", "rounds", "scope", "seed",
                  "per_class", "norm", "data")


def prune_to_folder(args: argparse.Namespace, out: Path, log=print) -> dict:
    """Prune as the arguments say and write config, per-layer table and masks into ``out``.

    A folder holding other work is refused before anything is loaded; config.json is written
    before pruning (an interrupted multi-round pruning resumes), the masks last (all files
    atomically), so a folder with masks.safetensors is finished and is not pruned again.
    """
    from ..analysis.flops import count_flops
    from ..analysis.layers import format_layer_table, write_layer_csv
    from ..api import prune
    from ..experiments.folder import claim, read_config, write_config
    from ..experiments.resolve import build_model, load_any_dataset, load_weights, pruning_batch
    from ..masks import unpruned_matrices
    from ..methods.spec import resolved_spec
    from ..models import IMAGENET_MEAN, IMAGENET_STD
    from ..schedule import parse_sparsity

    sparsity = parse_sparsity(args.sparsity)
    # the resolved method (px -> px[variant=cvpr2024]): a folder pruned under an older
    # default has none recorded, or another one, and is refused
    identity = {**{k: getattr(args, k, None) for k in PRUNE_IDENTITY}, "sparsity": sparsity,
                "resolved_method": resolved_spec(args.method)}
    claim(out, "prune", identity)
    if (out / "masks.safetensors").exists() and read_config(out) is not None:
        masks = Masks.load(out / "masks.safetensors")
        log(f"{out}: already finished ({args.method}: kept {masks.kept:,} of {masks.total:,} "
            f"weights); choose another --out to prune again")
        return {"masks": masks, "already_finished": True}
    dataset = load_any_dataset(args.data, "train")
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.num_classes or dataset.num_classes)
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
    checkpoint = out / prune_checkpoint.FILE_NAME
    log_resume(checkpoint, log)
    start = time.perf_counter()
    masks = prune(model, args.method, sparsity, (x, y), rounds=args.rounds, scope=args.scope,
                  seed=args.seed, progress=show_progress(args), checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    if not args.allow_disconnected:
        check_connected(model, x, masks, args.method)
    flops = count_flops(model, tuple(x.shape[1:]), masks)
    unpruned = unpruned_matrices(model, masks)
    write_layer_csv(masks, out / "layers.csv", flops, unpruned)
    masks.save(out / "masks.safetensors", {"method": args.method, "sparsity": sparsity})
    log(format_layer_table(masks, flops, unpruned))
    log(f"{args.method}: kept {masks.kept:,} of {masks.total:,} weights "
        f"(density {masks.density():.4f}) in {seconds:.1f} s -> {out}")
    return {"masks": masks, "model": model, "dataset": dataset, "flops": flops,
            "seconds": seconds}


def cmd_prune(args: argparse.Namespace) -> int:
    from ..experiments.folder import left_as_found_on_failure

    with left_as_found_on_failure(args.out):
        prune_to_folder(args, Path(args.out))
    return 0


DESCRIPTION = ("pxprune: foresight pruning of vision models with PX and the usual baselines.\n"
               "Run 'pxprune COMMAND --help' for a command's options.")
EPILOG = """\
examples:
  pxprune demo                                     PX vs random at 98.2 %, short CPU training
  pxprune prune --method px --sparsity 98.2% --out runs/p
  pxprune run --dataset my.npz --holdout 0.2 --method snip --sparsity 0.9 --out runs/r

--model package.module:function imports that module and calls the function: it runs your
code (only name modules you trust). Weights and checkpoints are read with weights_only=True.
Bad input is one line on stderr and exit status 2; a folder holding other work is refused."""

# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pxprune", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pxprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="prune a model and write masks + per-layer table")
    _common_prune_args(p)
    p.add_argument("--data", default="cifar10", help="dataset name or a .pt/.npz file")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_prune)

    from . import commands  # the longer commands live in their own module

    commands.add_commands(sub, _common_prune_args)
    return parser


def _one_line(command: str, message: str) -> int:
    """Print ``message`` as one line on stderr; the exit status of a user-facing error (2)."""
    message = " ".join(message.split())
    print(f"pxprune {command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    set_cli_argv(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PxpruneError as exc:  # bad input or a fault the user can fix: one line, exit 2
        return _one_line(args.command, str(exc))
    except OSError as exc:  # disk full, read-only, a file in the way; other OSErrors are bugs
        if exc.errno not in USER_ERRNOS and not isinstance(exc, FileNotFoundError):
            raise
        return _one_line(args.command, describe_os_error(exc, "a file")
                         if not isinstance(exc, FileNotFoundError) else str(exc))
    except KeyboardInterrupt:
        print(f"pxprune {args.command}: interrupted; re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""Argument helpers shared by the commands: model and pruning options, training options, the
run configuration built from them, progress bars. The only place besides the command modules
that knows about argparse."""

from __future__ import annotations

import argparse
import sys

import torch

from ..data import DATASETS
from ..devices import check_device
from ..experiments.config import (
    CPU_RECIPE,
    DENSE,
    MASKS,
    RunConfig,
    default_recipe,
    defaults_of,
)
from ..experiments.folder import check_out_named
from ..experiments.resolve import UsageError, read_masks_file
from ..methods import REGISTRY
from ..models import NAMES
from ..schedule import check_seed, parse_sparsity
from ..training.recipes import RECIPES
from ..training.train import masks_fingerprint


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: a log file gets one line per epoch, no escapes."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def check_common_args(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, values the parser's types let through: a device that
    is not here, a negative or over-64-bit seed, repeated sweep seeds, --num-classes below 1,
    an empty --out."""
    if getattr(args, "out", None) is not None:
        check_out_named(args.out)  # '' would write into the current folder
    device = getattr(args, "device", None)
    if device is not None:
        # Slurm jobs run elsewhere: a login node without a GPU may submit --device cuda
        args.device = check_device(device, here=getattr(args, "launcher", None) != "submitit")
    seeds = ([args.seed] if getattr(args, "seed", None) is not None else []) + list(
        getattr(args, "seeds", None) or [])
    for seed in seeds:
        check_seed(seed)
    repeated = sorted({s for s in getattr(args, "seeds", None) or [] if args.seeds.count(s) > 1})
    if repeated:
        raise UsageError(f"--seeds names seed {repeated[0]} more than once (each seed is one "
                         f"run of every cell)")
    num_classes = getattr(args, "num_classes", None)
    if num_classes is not None and num_classes < 1:
        raise UsageError(f"--num-classes must be at least 1, got {num_classes}")


def add_model_args(p: argparse.ArgumentParser, config: type = RunConfig, *,
                   sweep: bool = False) -> None:
    """The model and pruning options of prune, run, transfer and sweep, with the defaults of
    the command's configuration class (``config``; a field it lacks takes RunConfig's). A sweep
    has plural forms of --method / --sparsity / --seed (its own), and leaves --model and
    --norm at None so that a transfer sweep can tell whether they were given."""
    default = {**defaults_of(RunConfig), **defaults_of(config)}
    model_default = None if sweep else default["model"]
    p.add_argument("--model", default=model_default,
                   help=f"a built-in name ({', '.join(NAMES)}) or package.module:function, "
                        f"which IMPORTS AND CALLS YOUR CODE (only name modules you trust): "
                        f"function(num_classes=N) when it takes num_classes, else function()"
                        + (" (default: resnet20; not with --transfer)" if sweep else ""))
    p.add_argument("--output", default=None,
                   help="for a model that returns several outputs: which one is the logits, "
                        "an index (0) for a tuple or a key (logits) for a dict or object")
    p.add_argument("--weights", help="optional state_dict file to load before pruning: "
                                     ".safetensors, or a torch file read with weights_only=True "
                                     "(tensors only); every key must fit the model")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the dataset's number of classes)")
    if not sweep:
        p.add_argument("--method", default=default["method"],
                       help=f"name or name[key=value,...], e.g. px, px[variant=bound], "
                            f"snip[rounds=10]; names: {', '.join(sorted(REGISTRY))}")
        p.add_argument("--sparsity", default=default["sparsity"],
                       help="fraction pruned, in [0, 1): 0.982 or 98.2%%")
    p.add_argument("--rounds", type=int, default=default["rounds"],
                   help="pruning rounds (default: the method's, 100 for PX/SynFlow)")
    p.add_argument("--keep-dense", default=default["keep_dense"], metavar="LAYERS",
                   help="layers left unpruned and out of the sparsity count: first, last (the "
                        "stem convolution and the classifier, in registration order) or names, "
                        "comma-separated, e.g. first,last or conv1,fc")
    p.add_argument("--scope", choices=("global", "layer"), default=default["scope"],
                   help="one threshold over all layers, or the same density in every layer")
    if not sweep:
        p.add_argument("--seed", type=int, default=default["seed"],
                       help="drives init, the pruning split, data order")
    p.add_argument("--per-class", type=int, default=default["per_class"],
                   help="pruning split size per class")
    p.add_argument("--norm", choices=("dataset", "imagenet"),
                   default=None if sweep else default["norm"],
                   help="input normalisation (imagenet for the shared pre-trained CIFAR ResNets)"
                        + (" (default: dataset; not with --transfer)" if sweep else ""))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (a bar on a terminal; in a log file, a pruning "
                        "prints a line every tenth of its rounds and training one per epoch)")
    p.add_argument("--allow-disconnected", action="store_true",
                   help="keep masks that cut every path from input to output (refused "
                        "otherwise; a sweep keeps them, flagged in each summary.json)")


def add_training_args(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """The options of a training run (run and sweep): model and pruning, data, recipe."""
    add_model_args(p, RunConfig, sweep=sweep)
    p.add_argument("--dataset", "--data", default=RunConfig.dataset,
                   help=f"dataset name ({', '.join(DATASETS)}) or a .pt/.npz file of "
                        f"images and labels (then give --test-dataset or --holdout)")
    p.add_argument("--test-dataset", default=None,
                   help="a .pt/.npz file to test on (for a --dataset file)")
    p.add_argument("--holdout", type=float, default=RunConfig.holdout,
                   help="test on this fraction of a --dataset file, held out per class with "
                        "--seed and never trained on (e.g. 0.2)")
    p.add_argument("--recipe", default=None,
                   help=f"training preset: {', '.join(RECIPES)} (default: {RunConfig.recipe}, "
                        f"or {CPU_RECIPE} on CPU); `pxprune recipes` shows what each does")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    p.add_argument("--lr", type=float,
                   help="peak learning rate (default: the recipe's; the schedule scales it)")
    p.add_argument("--batch-size", type=int, help="(default: the recipe's)")
    p.add_argument("--weight-decay", type=float, help="(default: the recipe's)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default: the recipe's)")
    p.add_argument("--schedule", choices=("multistep", "cosine", "onecycle", "constant"))
    p.add_argument("--train-per-class", type=int, help="use the first N training images per class")
    p.add_argument("--test-per-class", type=int, help="use the first N test images per class")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="training precision (default auto: CUDA AMP; CPU bf16 autocast where "
                        "the processor has native bf16, else fp32)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of parsed ``run`` (or ``sweep``, per cell) arguments: the one place the
    command line becomes a configuration; everything below takes the RunConfig."""
    method = args.method
    sparsity = 0.0 if method == DENSE else parse_sparsity(args.sparsity)
    masks_file = masks_sha = None
    if getattr(args, "masks", None):  # train given masks: their method and sparsity, no pruning
        path, masks, meta = read_masks_file(args.masks)
        masks_file, masks_sha = str(path), masks_fingerprint(masks)
        method = str(meta.get("method") or MASKS)
        sparsity = 1.0 - masks.kept / masks.total
    recipe = args.recipe or default_recipe(args.device)
    return RunConfig(
        model=args.model, dataset=args.dataset, method=method, sparsity=sparsity,
        seed=args.seed, rounds=args.rounds, scope=args.scope, per_class=args.per_class,
        recipe=recipe, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        weight_decay=getattr(args, "weight_decay", None),
        momentum=getattr(args, "momentum", None),
        schedule=args.schedule, train_per_class=args.train_per_class,
        test_per_class=args.test_per_class, weights=args.weights, norm=args.norm,
        test_dataset=getattr(args, "test_dataset", None),
        holdout=float(getattr(args, "holdout", 0.0) or 0.0),
        # a sweep measures layer collapse: its cells keep disconnected masks (flagged)
        allow_disconnected=bool(getattr(args, "allow_disconnected", False))
        or getattr(args, "command", None) == "sweep",
        precision=getattr(args, "precision", None),
        output=getattr(args, "output", None),
        keep_dense=getattr(args, "keep_dense", None),
        masks=masks_file, masks_sha256=masks_sha,
    )

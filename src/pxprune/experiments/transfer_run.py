"""``pxprune transfer``: prune a pre-trained backbone for a downstream dataset, probe or fine-tune.

Steps (see :mod:`pxprune.transfer`): load the backbone's pre-trained weights strictly with a fresh
head for the downstream classes; fit a ridge probe on the dense features of the downstream
training images (the *dense* reference, evaluated on the test images); prune with the downstream
pruning split while that probe sits in the classifier (``--head probe``); refit a probe that
respects the classifier's mask on the pruned features (``--mode probe``: no training) and, with
``--mode finetune``, also train the whole pruned network with the mask fixed (and the dense one
the same way, unless ``--no-dense-finetune``).

The new classifier while scoring: the checkpoint's head is replaced by a fresh Linear for the
downstream classes (seeded by ``--seed``); with ``--head probe`` (default) the ridge probe of the
dense features is written into it before scoring, with ``--head random`` (the authors' setting:
their code replaces ``fc`` and prunes it, paper.md §1.6, §5) it stays the fresh random layer. In
both it is scored and pruned like every other layer (global threshold), so a method can empty it:
such a cell gets a warning line and ``classifier_emptied: true`` in ``summary.json`` (its
fine-tuned accuracy is chance). Fine-tuning (``--recipe``, default ``finetune_cpu`` in finetune
mode) starts from the ridge probe refitted on the pruned features within the head's mask; in
finetune mode the pruned network's BatchNorm running statistics are first recomputed on 2,048
seeded training images (:func:`pxprune.transfer.finetune.recalibrate_batchnorm`: the dense
network's statistics make a pruned network's eval features nearly constant, the probe fitted on
them huge, and the first fine-tuning loss ~1e5). The dense reference keeps the pre-trained
statistics (its features are well conditioned), as in the pilot that chose the recipe.

A user's backbone (``--backbone package.module:function``) is built as ``--model`` builds it,
``--weights`` (optional) loaded strictly, its classifier named (``--classifier``) or found (the
last nn.Linear whose output is the logits) and replaced like a built-in one's; its inputs are
normalised with ImageNet statistics unless ``--norm`` says otherwise, at the data's image size
unless ``--image-size`` says otherwise.

The output folder gets ``config.json``, ``masks.safetensors``, the per-layer table
(``layers.txt``, ``layers.csv``) and ``summary.json`` (accuracies in percent; ``result.json``
in folders written before transfer cells wrote ``summary.json``, still read).

The steps are separate functions (:func:`load_transfer_data`, :func:`load_pretrained`,
:func:`dense_reference`, :func:`prune_cell`) so that ``pxprune sweep --transfer``
(:mod:`pxprune.experiments.transfer_sweep`) runs many cells on one copy of the data and one dense
reference
per seed, each cell giving what ``pxprune transfer`` gives with the same arguments.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import models
from ..data import limit_per_class
from ..errors import PxpruneError
from ..io import atomic_write_json, read_json
from ..methods import REGISTRY
from ..methods.spec import MethodSpec, resolved_spec
from ..models import IMAGENET_MEAN, IMAGENET_STD
from ..training.recipes import get_recipe
from ..transfer.finetune import finetune, recalibrate_batchnorm
from ..transfer.head import classifier_name
from ..transfer.load import backbone_normalization, default_weights, load_backbone
from ..transfer.probe import install_probe, linear_probe
from ..transfer.prune import pruning_batch
from . import provenance
from .cell_check import DONE_FILES, TRANSFER, done_file
from .cell_lock import CellLock
from .checks import log_threads
from .config import TransferConfig, config_record
from .data_split import train_test_sets
from .folder import claim, read_config
from .prune_cell import PrunedCell, cell_rounds, prune_cell_masks, save_masks
from .resolve import UsageError, build_model, import_factory, is_user_model


def _positive(name: str, value: int | None) -> None:
    """Refuse a negative (or zero, where meaningless) count option."""
    if value is not None and value < 0:
        raise UsageError(f"--{name} must be >= 0, got {value}")


def transfer_spec(method: str) -> MethodSpec:
    """The method, parsed once; refuses a method that trains (IMP): transfer prunes without
    training."""
    spec = MethodSpec.parse(method)  # PruningError listing the valid names
    if REGISTRY[spec.name].trains:
        raise UsageError(f"method {spec.name} trains the network; transfer prunes without "
                         "training: use a foresight method")
    return spec


def check_config(cfg: TransferConfig) -> None:
    """Validate names, files and numbers before any heavy work (one-line errors)."""
    if is_user_model(cfg.backbone):
        import_factory(cfg.backbone)  # a bad module path fails here, before any work
    elif cfg.backbone not in models.NAMES:
        raise UsageError(f"unknown backbone {cfg.backbone!r}; valid names: "
                         f"{', '.join(models.NAMES)} or package.module:function")
    elif cfg.classifier is not None:
        raise UsageError(f"--classifier names the classifier of your own backbone "
                         f"(module:function); {cfg.backbone} has its own")
    transfer_spec(cfg.method)
    if cfg.head not in HEAD_TEXT:
        raise UsageError(f"--head must be one of {', '.join(HEAD_TEXT)}, got {cfg.head!r}")
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise FileNotFoundError(f"weights file {cfg.weights} not found")
    for name in ("train_per_class", "test_per_class"):
        _positive(name.replace("_", "-"), getattr(cfg, name))
    if cfg.image_size is not None and cfg.image_size < 8:
        raise UsageError(f"--image-size must be >= 8, got {cfg.image_size}")
    if cfg.epochs is not None and cfg.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {cfg.epochs}")
    for name in ("epochs", "lr", "batch_size"):
        if cfg.mode != "finetune" and getattr(cfg, name) is not None:
            raise UsageError(f"--{name.replace('_', '-')} only applies to --mode finetune")
    if cfg.round_factor is not None:
        if not 0.0 < cfg.round_factor < 1.0:
            raise UsageError(f"--round-factor must lie strictly between 0 and 1, got "
                             f"{cfg.round_factor}")
        if cfg.rounds is not None:
            raise UsageError("give --rounds (a fixed count) or --round-factor (a count per "
                             "sparsity), not both")
    if cfg.mode == "finetune":
        recipe_of(cfg)


def recipe_of(cfg: TransferConfig):
    """The fine-tuning recipe (``--recipe`` with ``--lr`` / ``--batch-size`` applied)."""
    overrides = {k: getattr(cfg, k) for k in ("lr", "batch_size") if getattr(cfg, k)}
    try:
        return get_recipe(cfg.recipe, **overrides)
    except (KeyError, ValueError) as exc:
        raise UsageError(f"recipe {cfg.recipe!r}: {exc}") from exc


def effective_rounds(cfg: TransferConfig) -> int:
    """Rounds of the cell, by the one rule (:func:`pxprune.experiments.prune_cell.cell_rounds`):
    the spec's ``rounds=``, else ``--rounds``, else (multi-round methods with ``--round-factor
    F``) ``round(ln(1 - s) / ln F)``, else the method's default."""
    return cell_rounds(transfer_spec(cfg.method), cfg.sparsity, rounds=cfg.rounds,
                       round_factor=cfg.round_factor)


@dataclass
class TransferData:
    """The downstream data of a transfer run, normalised for the backbone (shared by cells)."""

    full_train: object  # ImageDataset: the pruning split is drawn from all of it
    train: object  # the first train_per_class images per class (probe fit / fine-tuning)
    test: object
    mean: tuple
    std: tuple
    num_classes: int
    size: int | None
    shape: tuple


def load_transfer_data(cfg: TransferConfig) -> TransferData:
    """Train / test sets cut and normalised as the config says."""
    # a .pt/.npz file needs a test file or a held-out fraction: its one split is not a test
    full_train, test = train_test_sets(cfg.dataset, cfg.test_dataset, cfg.holdout, cfg.seed)
    if cfg.norm == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif cfg.norm == "dataset":
        mean, std = full_train.mean, full_train.std
    else:
        mean, std = backbone_normalization(cfg.backbone)
    full_train = full_train.with_normalization(mean, std)
    test = test.with_normalization(mean, std)
    train = full_train
    if cfg.train_per_class:
        train = limit_per_class(full_train, cfg.train_per_class)
    if cfg.test_per_class:
        test = limit_per_class(test, cfg.test_per_class)
    size = cfg.image_size
    shape = (full_train.image_shape[0], size, size) if size else tuple(full_train.image_shape)
    return TransferData(full_train, train, test, tuple(mean), tuple(std),
                        cfg.num_classes or full_train.num_classes, size, shape)


def load_pretrained(cfg: TransferConfig, data: TransferData,
                    device: str = "cpu") -> tuple[torch.nn.Module, str | None]:
    """(backbone with pre-trained weights and a fresh head seeded by ``cfg.seed``, weights path:
    None for a user's backbone used as its function builds it)."""
    if is_user_model(cfg.backbone):
        return _load_user_backbone(cfg, data).to(device), cfg.weights
    try:
        model = load_backbone(cfg.backbone, cfg.weights, num_classes=data.num_classes,
                              head_seed=cfg.seed)
    except PxpruneError:  # one line already (weights that do not fit, unreadable file)
        raise
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UsageError(f"cannot load weights for {cfg.backbone}: {exc}") from exc
    return model.to(device), str(cfg.weights or default_weights(cfg.backbone))


def _load_user_backbone(cfg: TransferConfig, data: TransferData) -> torch.nn.Module:
    """The user's ``module:function`` built as ``--model`` builds it, ``--weights`` loaded
    strictly, the classifier named (``--classifier``) or found on a batch of the data's shape,
    then replaced by a fresh one for the dataset's classes."""
    model = build_model(cfg.backbone, data.num_classes, cfg.output)
    example = torch.randn(2, *data.shape, generator=torch.Generator().manual_seed(0))
    return load_backbone(model, cfg.weights, num_classes=data.num_classes, head_seed=cfg.seed,
                         classifier=cfg.classifier, example=example)


def write_config(out: Path, cfg: TransferConfig, data: TransferData, weights: str | None,
                 **extra: object) -> None:
    """``config.json``: the config, the resolved weights and data facts, versions."""
    config = config_record(
        "transfer", asdict(cfg), provenance.record(), **extra, weights=weights,
        resolved_method=resolved_spec(cfg.method),
        normalization={"mean": list(data.mean), "std": list(data.std)},
        dataset_name=data.full_train.name, num_classes=data.num_classes,
        num_train=len(data.train), num_test=len(data.test))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config, default=str)


def _probe_summary(res, seconds: float) -> dict:
    """JSON fields of a :class:`pxprune.transfer.probe.ProbeResult` (accuracies in percent)."""
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


BN_IMAGES = 2048  # training images the pruned network's BN statistics are recomputed on

HEAD_TEXT = {
    "probe": "fresh Linear holding the ridge probe of the dense features, scored and pruned like "
             "every other layer",
    "random": "fresh random Linear (the authors' setting), scored and pruned like every other "
              "layer",
}


def classifier_block(model: torch.nn.Module, masks, head: str) -> dict:
    """``summary.json``'s ``classifier``: the new head's name, treatment while scoring, kept
    weights and whether the method emptied it (then fine-tuning cannot leave chance)."""
    key = classifier_name(model) + ".weight"
    if key not in masks:
        return {"name": key, "while_scoring": HEAD_TEXT[head].split(",")[0] + ", kept dense",
                "kept": None, "total": None, "emptied": False}
    kept, total = int(masks[key].sum()), int(masks[key].numel())
    return {"name": key, "while_scoring": HEAD_TEXT[head], "kept": kept, "total": total,
            "emptied": kept == 0}


def describe_head(model: torch.nn.Module, backbone: str) -> str:
    """One line naming the classifier that was replaced (found, or named by --classifier), so
    a user sees which layer became the new head before any work is done."""
    name = classifier_name(model)
    layer = model.get_submodule(name)
    shape = (f" ({layer.in_features} -> {layer.out_features})"
             if isinstance(layer, torch.nn.Linear) else "")
    return f"{backbone}: classifier {name}{shape} replaced by a fresh layer for the new classes"


def _finetune_summary(summary: dict) -> dict:
    """The fine-tuning run's accuracies, length and precision (with the reason for it)."""
    keys = ("final_test_acc", "best_test_acc", "best_epoch", "epochs", "train_seconds",
            "precision", "precision_reason", "memory_format")
    return {k: summary.get(k) for k in keys}


@dataclass
class DenseReference:
    """The dense model's probe (the scoring head of ``--head probe``) and its result block."""

    probe: object  # pxprune.transfer.probe.Probe
    block: dict  # summary.json's "dense" entry: probe summary, test_acc (and finetune)


def dense_reference(cfg: TransferConfig, data: TransferData, model: torch.nn.Module, *,
                    finetune_dir: Path, device: str = "cpu", progress: bool = False,
                    log: Callable[[str], object] = print) -> DenseReference:
    """Ridge probe on the dense features (and, in finetune mode, the dense fine-tuning run)."""
    t = time.perf_counter()
    dense = linear_probe(model, data.train, data.test, l2=cfg.l2, seed=cfg.seed,
                           device=device, size=data.size, install=False)
    probe = _probe_summary(dense, time.perf_counter() - t)
    block: dict = {"probe": probe, "test_acc": probe["test_acc"]}
    log(f"dense {cfg.backbone}: probe test acc {probe['test_acc']:.2f} %")
    if cfg.mode == "finetune" and cfg.dense_finetune:  # fine-tuned from the dense probe head
        dense_model = copy.deepcopy(model)
        install_probe(dense_model, dense.probe.weight, dense.probe.bias)
        dft = finetune(dense_model, None, data.train, data.test, recipe_of(cfg),
                         epochs=cfg.epochs, out_dir=finetune_dir, device=device, seed=cfg.seed,
                         size=data.size, progress=progress, log=log)
        block.update(finetune=_finetune_summary(dft), test_acc=dft["final_test_acc"])
    return DenseReference(dense.probe, block)


def _prune_masks(cfg: TransferConfig, data: TransferData, model: torch.nn.Module,
                 dense: DenseReference, out: Path, *, device: str, progress: bool,
                 log: Callable[[str], object], start: tuple | None,
                 show_layers: bool) -> tuple[PrunedCell, dict, dict]:
    """The pruning of a transfer cell, through the one pruning cell: the dense probe in the
    classifier while scoring (``--head probe``), the downstream pruning split; masks and layer
    table written. Returns (the cell, the score options, the MACs)."""
    spec = transfer_spec(cfg.method)
    extra = {"precision": cfg.px_precision} if spec.name == "px" and \
        cfg.px_precision != "float32" else {}
    model.to(device).eval()
    if cfg.head == "probe":  # the dense probe in the classifier while scoring
        install_probe(model, dense.probe.weight, dense.probe.bias)
    x, y = pruning_batch(data.full_train, cfg.per_class, cfg.seed, data.size)
    cell = prune_cell_masks(model, spec, cfg.sparsity, (x.to(device), y.to(device)),
                            rounds=cfg.rounds, round_factor=cfg.round_factor, scope=cfg.scope,
                            seed=cfg.seed, keep_dense=cfg.keep_dense or (),
                            allow_disconnected=True, progress=progress,
                            log=log, start=None if start is None else start[:2], **extra)
    options = {**spec.score_options, **{k: v for k, v in extra.items()
                                         if k not in spec.options}}
    out.mkdir(parents=True, exist_ok=True)
    flops, table = save_masks(out, cell.masks, model, data.shape, {
        "method": cfg.method, "sparsity": cfg.sparsity, "backbone": cfg.backbone,
        "rounds": cell.rounds})
    if show_layers:
        log(table)
    return cell, options, flops


def prune_cell(cfg: TransferConfig, data: TransferData, model: torch.nn.Module,
               dense: DenseReference, out: Path, *, device: str = "cpu", progress: bool = False,
               log: Callable[[str], object] = print, start: tuple | None = None,
               show_layers: bool = True) -> dict:
    """Prune ``model`` (pre-trained, fresh head), refit the probe (and fine-tune); write masks,
    layer table and ``summary.json`` into ``out``; return the result.

    ``start=(masks, j, folder)`` continues from the masks of the first ``j`` rounds of this
    cell's schedule (a lower sparsity's cell whose per-round counts are a prefix of this one's),
    which gives the same masks as pruning from scratch. ``show_layers``: log the per-layer table
    (it is written to ``layers.txt`` either way).
    """
    cell, options, flops = _prune_masks(cfg, data, model, dense, out, device=device,
                                        progress=progress, log=log, start=start,
                                        show_layers=show_layers)
    masks, rounds, scope = cell.masks, cell.rounds, transfer_spec(cfg.method).scope(cfg.scope)
    head = classifier_block(model, masks, cfg.head)
    if head["emptied"]:
        log(f"WARNING: {cfg.method} at {cfg.sparsity:.2%} (seed {cfg.seed}) emptied the new "
            f"classifier {head['name']} (0 of {head['total']} weights kept): this cell's "
            "accuracy is chance")

    recalibrated = 0
    if cfg.mode == "finetune":  # stale dense BN statistics would make the probe head explode
        recalibrated = recalibrate_batchnorm(model, data.train, images=BN_IMAGES,
                                               seed=cfg.seed, size=data.size, device=device)
    t = time.perf_counter()
    pruned = linear_probe(model, data.train, data.test, masks=masks, l2=cfg.l2, seed=cfg.seed,
                            device=device, size=data.size, install=True)
    pruned_probe = _probe_summary(pruned, time.perf_counter() - t)
    log(f"{cfg.method} at {cfg.sparsity:.2%}: probe test acc {pruned_probe['test_acc']:.2f} % "
        f"(dense {dense.block['probe']['test_acc']:.2f} %)")
    result: dict = {
        "backbone": cfg.backbone, "dataset": data.full_train.name, "method": cfg.method,
        "mode": cfg.mode, "seed": cfg.seed, "sparsity": cfg.sparsity,
        "sparsity_actual": masks.sparsity(), "density": masks.density(), "kept": masks.kept,
        "total": masks.total, "collapsed_layers": masks.collapsed_layers(),
        "outputs_reached": list(cell.outputs_reached),
        "image_size": data.size, "rounds": rounds, "scope": scope, "head": cfg.head,
        "classifier": head, "classifier_emptied": head["emptied"],
        "bn_recalibration_images": recalibrated,
        "continued_from": None if start is None else {"folder": start[2], "rounds": start[1]},
        "prune_seconds": round(cell.seconds, 1), "prune_options": options,
        "macs_kept": flops["kept_macs"], "macs_dense": flops["dense_macs"],
        "dense": copy.deepcopy(dense.block),
        "pruned": {"probe": pruned_probe, "test_acc": pruned_probe["test_acc"]},
        "accuracy_unit": "percent",
    }
    if cfg.mode == "finetune":
        ft = finetune(model, masks, data.train, data.test, recipe_of(cfg), epochs=cfg.epochs,
                        out_dir=out / "finetune", device=device, seed=cfg.seed, size=data.size,
                        progress=progress, log=log)
        result["pruned"].update(finetune=_finetune_summary(ft), test_acc=ft["final_test_acc"])
    atomic_write_json(out / DONE_FILES[TRANSFER], result)
    log(f"dense {result['dense']['test_acc']} %, {cfg.method} {result['pruned']['test_acc']} % "
        f"({cfg.mode}) -> {out}")
    return result


def run_transfer(cfg: TransferConfig, out: Path, *, device: str = "cpu",
                 threads: int | None = None, progress: bool = False,
                 log: Callable[[str], object] = print) -> dict:
    """One transfer run into ``out``: refuse other work there, read back a finished run, else
    prune, probe or fine-tune and write the folder; returns summary.json's content."""
    # another command's or another configuration's work is refused before anything is loaded
    # (the fields config.json records resolved are compared only when given)
    claim(out, "transfer", {**{k: v for k, v in asdict(cfg).items()
                               if not (k in ("weights", "num_classes") and v is None)},
                            "resolved_method": resolved_spec(cfg.method)})
    with CellLock(out):  # one writer: a second run into this folder is refused in one line
        return _run_held(cfg, out, device=device, threads=threads, progress=progress, log=log)


def _run_held(cfg: TransferConfig, out: Path, *, device: str, threads: int | None,
              progress: bool, log: Callable[[str], object]) -> dict:
    """:func:`run_transfer` in a folder this process holds."""
    done = done_file(out, TRANSFER)  # summary.json (result.json in older folders)
    if done.is_file() and read_config(out) is not None:
        log(f"{out}: already finished ({done.name}); choose another --out to run it again")
        return read_json(done, "the finished transfer's summary",
                         hint="choose another --out")
    if threads:
        torch.set_num_threads(threads)
    log_threads(device, log)
    data = load_transfer_data(cfg)
    model, weights = load_pretrained(cfg, data, device)
    log(describe_head(model, cfg.backbone))
    write_config(out, cfg, data, weights, device=device, threads=threads)
    dense = dense_reference(cfg, data, model, finetune_dir=out / "finetune_dense",
                            device=device, progress=progress, log=log)
    return prune_cell(cfg, data, model, dense, out, device=device, progress=progress, log=log)


__all__ = ["DenseReference", "TransferData", "check_config",
           "dense_reference", "effective_rounds", "load_pretrained", "load_transfer_data",
           "prune_cell", "run_transfer"]

"""One experiment cell: build, prune, train with the mask fixed, evaluate — in a resumable folder.

Folder layout: ``config.json`` (what was asked), ``masks.safetensors`` + ``prune.json`` (written
once pruning is done, so a resumed run never re-prunes), the trainer's ``checkpoint.pt`` and
``metrics.jsonl``, and ``summary.json`` when finished. A finished folder is never re-run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..data import ImageDataset, limit_per_class
from ..data.sampling import pruning_batch
from ..devices import check_device
from ..errors import DamagedFileError, OutputError
from ..io import atomic_write_json, read_json
from ..masks import Masks, PruningError
from ..methods.imp import run_imp
from ..methods.spec import MethodSpec, resolved_spec
from ..models import IMAGENET_MEAN, IMAGENET_STD
from ..schedule import check_seed
from ..training import distributed as D
from ..training.precision import resolve_precision
from ..training.recipes import Recipe, get_recipe
from ..training.train import masks_fingerprint, train
from . import provenance
from .cell_check import check_cell
from .cell_lock import CellLock
from .checks import check_connected, check_inputs, check_saved_masks, read_prune_record
from .config import DENSE, RunConfig, config_record
from .data_split import describe_test_split, train_test_sets
from .folder import (
    check_out_named,
    claim,
    differences,
    read_config,
    work_files,
    write_config,
)
from .prune_cell import prune_cell_masks, save_masks
from .resolve import build_model, check_masks_fit, load_weights, read_masks_file


def load_splits(cfg: RunConfig) -> tuple[ImageDataset, ImageDataset]:
    """Train and test sets, cut to the first n per class when the config asks (CPU protocols)."""
    train_set, test_set = train_test_sets(cfg.dataset, cfg.test_dataset, cfg.holdout, cfg.seed)
    if cfg.train_per_class:
        train_set = limit_per_class(train_set, cfg.train_per_class)
    if cfg.test_per_class:
        test_set = limit_per_class(test_set, cfg.test_per_class)
    if cfg.norm == "imagenet":
        train_set = train_set.with_normalization(IMAGENET_MEAN, IMAGENET_STD)
        test_set = test_set.with_normalization(IMAGENET_MEAN, IMAGENET_STD)
    return train_set, test_set


def initial_model(cfg: RunConfig, num_classes: int) -> torch.nn.Module:
    """The seeded initialisation (identical for every method of a sweep with the same seed)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes, cfg.output)
    if cfg.weights:
        load_weights(model, cfg.weights)
    return model


def imp_masks(cfg: RunConfig, model: torch.nn.Module, train_set: ImageDataset,
              test_set: ImageDataset, out: Path, device: str, progress: bool,
              log: Callable[[str], object] = print) -> Masks:
    """Iterative magnitude pruning with rewinding to init, each training in its own resumable
    folder ``out/imp/iterK`` (a finished iteration is read back, not retrained)."""
    recipe = get_recipe(cfg.recipe, **cfg.recipe_overrides())
    iteration = iter(range(10_000))

    def train_fn(net: torch.nn.Module, masks: Masks) -> None:
        k = next(iteration)
        log(f"imp: training iteration {k} at density {masks.density():.4f}")
        train(net, masks, train_set, test_set, recipe, out_dir=out / "imp" / f"iter{k}",
              device=device, seed=cfg.seed, progress=progress, log=log)

    return run_imp(model, cfg.sparsity, train_fn, rounds=cfg.rounds, scope=cfg.scope)


def split_method(cfg: RunConfig) -> tuple[str, dict]:
    """The cell's method name and options (``px[variant=cvpr2024]``); ``rounds`` and ``scope``
    options override the config's. Dense and imp take no options."""
    spec = method_spec(cfg)
    return spec.name, dict(spec.options)


def method_spec(cfg: RunConfig) -> MethodSpec:
    """The cell's method, parsed once; ``dense`` and ``imp`` take no options."""
    spec = MethodSpec.parse(cfg.method, check=False)
    if spec.name in (DENSE, "imp"):
        if spec.options:
            raise PruningError(f"method {spec.name!r} takes no options, got {cfg.method!r}")
        return spec
    return MethodSpec.parse(cfg.method)


def prune_step(cfg: RunConfig, model: torch.nn.Module, train_set: ImageDataset,
               device: str, progress: bool, test_set: ImageDataset | None = None,
               out: Path | None = None,
               log: Callable[[str], object] = print) -> tuple[Masks, dict]:
    """Score and prune on the seeded class-balanced split; dense runs keep every weight;
    ``imp`` trains and rewinds (it needs ``test_set`` and ``out``)."""
    if cfg.masks:
        masks = given_masks(cfg, model, train_set, device)
        return masks, {**_prune_info(cfg, masks, 0.0), "masks_file": cfg.masks}
    spec = method_spec(cfg)
    if spec.name == DENSE or cfg.sparsity == 0:
        return Masks.ones(model), _prune_info(cfg, Masks.ones(model), 0.0)
    if spec.name == "imp":
        if test_set is None or out is None:
            raise PruningError("imp needs the training data and a run folder: use pxprune run")
        start = time.perf_counter()
        masks = imp_masks(cfg, model, train_set, test_set, out, device, progress)
        return masks, _prune_info(cfg, masks, time.perf_counter() - start)
    x, y = pruning_batch(train_set, cfg.per_class, cfg.seed)
    x, y = x.to(device), y.to(device)
    check_inputs(model, x, y)  # channels, labels: one line, not deep
    cell = prune_cell_masks(model, spec, cfg.sparsity, (x, y), rounds=cfg.rounds,
                            scope=cfg.scope, seed=cfg.seed, keep_dense=cfg.keep_dense or (),
                            folder=out, allow_disconnected=cfg.allow_disconnected,
                            progress=progress, log=log)
    info = _prune_info(cfg, cell.masks, cell.seconds)  # earlier attempts included
    return cell.masks, {**info, "outputs_reached": list(cell.outputs_reached)}


def _prune_info(cfg: RunConfig, masks: Masks, seconds: float) -> dict:
    """What prune.json records of a cell's masks."""
    return {
        "method": cfg.method, "sparsity": cfg.sparsity, "density": masks.density(),
        "kept": masks.kept, "total": masks.total, "prune_seconds": seconds,
        "layer_density": masks.layer_density(), "collapsed_layers": masks.collapsed_layers(),
    }


def given_masks(cfg: RunConfig, model: torch.nn.Module, train_set: ImageDataset,
                device: str) -> Masks:
    """``--masks``: the file's masks, unchanged since the configuration recorded their hash,
    fitting the model, connected unless allowed; applied to the model."""
    _, masks, _ = read_masks_file(cfg.masks)
    if masks_fingerprint(masks) != cfg.masks_sha256:
        raise PruningError(f"{cfg.masks} changed since this run was configured (its content "
                           f"hash differs); restore it or start another --out")
    masks = masks.in_order_of(model)
    check_masks_fit(masks, model, cfg.masks)
    if not cfg.allow_disconnected:
        x, _ = pruning_batch(train_set, 1, cfg.seed)
        check_connected(model, x.to(device), masks, cfg.method)
    masks.apply_(model)
    return masks


def with_resolved_method(cfg: RunConfig, legacy: bool = False) -> RunConfig:
    """``cfg`` with ``resolved_method`` filled in; ``legacy``: as the method was meant before
    the last change of a default (for folders written before the resolution was recorded)."""
    if cfg.resolved_method:
        return cfg
    return replace(cfg, resolved_method=resolved_spec(cfg.method, legacy=legacy))


def check_same_method(previous: RunConfig, cfg: RunConfig, out: Path) -> None:
    """Refuse to resume a folder whose method meant something else when it was scored."""
    before = with_resolved_method(previous, legacy=True).resolved_method
    if before != cfg.resolved_method:
        raise PruningError(
            f"{out} was pruned with {before!r}, but {cfg.method!r} now means "
            f"{cfg.resolved_method!r} (a default changed); use another --out")


def run_experiment(cfg: RunConfig, out: str | Path, *, device: str = "cpu",
                   progress: bool = True, log: Callable[[str], object] = print) -> dict:
    """Run (or resume, or just read back) one cell; returns its summary."""
    check_out_named(out)
    device = check_device(device)
    check_seed(cfg.seed)
    out = Path(out)
    # a bad recipe or precision fails here, before a folder is claimed or a weight is scored
    recipe = get_recipe(cfg.recipe, **cfg.recipe_overrides())
    resolve_precision(recipe.precision, torch.device(device), recipe.amp, recipe.amp_dtype)
    claim(out, "run")  # another command's work, a file in the way, unwritable: one line
    # one writer per folder (under torchrun rank 0 writes, the other ranks only read)
    with CellLock(out) if D.is_main_process() else nullcontext():
        return _run_claimed(cfg, out, recipe, device, progress, log)


def _run_claimed(cfg: RunConfig, out: Path, recipe: Recipe, device: str, progress: bool,
                 log: Callable[[str], object]) -> dict:
    """:func:`run_experiment` in a folder this process holds."""
    cell = prepare_claimed(cfg, out, device, progress, log)
    if isinstance(cell, dict):
        return cell
    summary = train(cell.model, cell.masks, cell.train_set, cell.test_set, recipe, out_dir=out,
                    device=device, seed=cell.cfg.seed, progress=progress, log=log)
    return finish_cell(cell, summary, device)


@dataclass
class PreparedCell:
    """A cell pruned (or resumed) and ready to train: what :func:`finish_cell` needs too."""

    cfg: RunConfig
    out: Path
    model: torch.nn.Module
    masks: Masks
    info: dict
    train_set: ImageDataset
    test_set: ImageDataset


def prepare_claimed(cfg: RunConfig, out: Path, device: str, progress: bool,
                    log: Callable[[str], object]) -> PreparedCell | dict:
    """Check the held folder, then prune or read back the saved masks: the cell ready to
    train, or the summary of a finished one (the trainer is the caller's: alone or stacked)."""
    saved = read_config(out)
    if saved is not None and work_files(out):  # never finish or resume another config's work
        wanted = {k: v for k, v in asdict(cfg).items()
                  if k not in ("resolved_method", "allow_disconnected")}  # not the result
        diff = differences(asdict(RunConfig.from_dict(saved)), wanted)
        if diff:
            raise OutputError(f"{out} holds a run with another configuration "
                              f"({'; '.join(diff[:3])}); use another --out")
    summary_path = out / "summary.json"
    config_path = out / "config.json"
    cfg = with_resolved_method(cfg)
    if config_path.exists() and summary_path.exists():  # finished: still never another method
        check_same_method(_saved_config(config_path), cfg, out)
    if summary_path.exists():
        finished = check_cell(out)  # the same check as a sweep's report and resume
        if finished.state != "done":
            raise DamagedFileError(f"{out} holds a damaged finished run ({finished.reason}); "
                                   "use another --out")
        log(f"{out}: already finished")
        return finished.done
    main = D.is_main_process()  # under torchrun only rank 0 writes; masks are broadcast
    out.mkdir(parents=True, exist_ok=True)
    if config_path.exists() and work_files(out):  # a config alone (a failed start) claims nothing
        previous = _saved_config(config_path)
        check_same_method(previous, cfg, out)
        previous = with_resolved_method(previous, legacy=True)
        previous = replace(previous, allow_disconnected=cfg.allow_disconnected)
        if previous != cfg:
            raise PruningError(f"{out} holds a run with a different config; use another --out")
    elif main:
        write_config(out, config_record("run", asdict(cfg), provenance.record()))

    return pruned_cell(cfg, out, device, progress, log)


def pruned_cell(cfg: RunConfig, out: Path, device: str, progress: bool,
                log: Callable[[str], object]) -> PreparedCell:
    """The cell's data, model and masks: the saved masks read back, else pruned and saved
    (``masks.safetensors``, ``prune.json``, the layer table) by rank 0."""
    main = D.is_main_process()
    train_set, test_set = load_splits(cfg)
    model = initial_model(cfg, train_set.num_classes).to(device)
    masks_path, prune_path = out / "masks.safetensors", out / "prune.json"
    if masks_path.exists() and prune_path.exists():
        # the model's order, which the trainer's checkpoint fingerprint depends on (else every
        # resume would be refused as "another masks")
        masks = Masks.load(masks_path).in_order_of(model)
        info = read_prune_record(prune_path)
        check_saved_masks(masks, model, info, masks_path)  # a missing layer would train dense
        log(f"{out}: resuming with the saved masks (density {masks.density():.4f})")
    else:
        is_imp = not cfg.masks and method_spec(cfg).name == "imp"  # given masks: no IMP
        if main or is_imp:  # imp trains: every rank takes part
            masks, info = prune_step(cfg, model, train_set, device, progress, test_set, out,
                                     log=log)
        else:  # scored on rank 0 only; the trainer broadcasts rank 0's masks to this rank
            masks, info = Masks.ones(model), {}
        if is_imp:  # the ticket is trained from the rewound init, like the others
            model = initial_model(cfg, train_set.num_classes).to(device)
        if main:
            save_masks(out, masks, model, tuple(train_set.image_shape), {
                "method": cfg.method, "resolved_method": cfg.resolved_method,
                "sparsity": cfg.sparsity, "seed": cfg.seed, "model": cfg.model,
                "dataset": train_set.name})
            atomic_write_json(prune_path, info)

    return PreparedCell(cfg, out, model, masks, info, train_set, test_set)


def finish_cell(cell: PreparedCell, summary: dict, device: str) -> dict:
    """The trainer's summary completed with the cell's config, pruning and data; written."""
    cfg, info, train_set, test_set, out = (cell.cfg, cell.info, cell.train_set, cell.test_set,
                                           cell.out)
    main = D.is_main_process()
    summary_path = out / "summary.json"
    summary = {**summary, "config": asdict(cfg), "prune": info, "dataset_name": train_set.name,
               "train_examples": len(train_set), "test_examples": len(test_set),
               "test_split": describe_test_split(cfg.dataset, cfg.test_dataset, cfg.holdout,
                                                 cfg.seed),
               "environment": provenance.environment(device)}
    if main:
        atomic_write_json(summary_path, summary)
    return summary


def _saved_config(path: Path) -> RunConfig:
    """The configuration an earlier run wrote; an edited or truncated one is one line."""
    saved = read_json(path, "the run's configuration", hint="use another --out")
    if not isinstance(saved, dict):
        raise DamagedFileError(f"the run's configuration {path} is not a JSON object; "
                               "use another --out")
    return RunConfig.from_dict(saved)

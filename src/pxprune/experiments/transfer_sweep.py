"""``pxprune sweep --transfer``: a grid of transfer runs (method x sparsity x seed) for a figure.

Each cell is what ``pxprune transfer`` does with the same arguments (see
:mod:`pxprune.experiments.transfer_run`): prune the pre-trained backbone with the downstream pruning
split, refit the ridge probe on the pruned features (``--mode probe``) and, with
``--mode finetune``, fine-tune with the mask fixed. Layout of the sweep folder ``OUT``::

    OUT/sweep.json                          kind "transfer": grid, protocol, environment, cells
    OUT/dense/seed<k>/                      the dense reference of seed k: summary.json,
                                            probe.safetensors (the scoring head), finetune/
    OUT/<method>/s<sparsity %>/seed<k>/     one ``pxprune transfer`` output folder per cell

Work done once rather than per cell: the data are read and cut once per sweep, the backbone is
loaded once per seed (each cell prunes a copy), and the dense probe (hence the dense feature
extraction) and the dense fine-tuning run once per seed, into ``dense/seed<k>``; every cell's
``summary.json`` repeats that dense block so it reads like a single transfer run (folders
written before transfer cells wrote ``summary.json`` hold ``result.json``: still read).

Multi-round schedules are shared where they coincide: with ``--round-factor F`` the cell at
sparsity s has round(ln(1 - s) / ln F) rounds of density F each, so a lower sparsity's rounds
are the first rounds of a higher one's. A cell then continues from the masks of the finished
cell whose per-round kept counts are the longest prefix of its own (``continued_from`` in its
summary.json); the masks are the same as pruning from scratch, at a fraction of the rounds.

Resumable like the training sweep: a finished cell (``summary.json``) is skipped, a cell that
raises gets ``error.json`` while the others still run (the command then exits 1), and a folder
holding another protocol or a training sweep is refused. An interrupted cell prunes again
(deterministically) and its fine-tuning resumes from its checkpoint. Every folder is written
holding its ``running.json`` (:mod:`pxprune.experiments.cell_lock`), so several invocations on
one folder (one per core) share the cells out.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ..errors import DamagedFileError
from ..io import atomic_write_json, read_json
from ..masks import Masks
from ..schedule import round_densities
from ..transfer.probe import Probe
from .cell_check import TRANSFER, done_file
from .config import DENSE, TransferConfig
from .sweep.cells import cell_state
from .sweep.grid import Cell, canonical_methods, plan_cells
from .sweep.records import environment
from .sweep.session import close_sweep, record_cell, start_sweep
from .sweep.worker import run_guarded, run_held
from .transfer_run import (
    DenseReference,
    TransferData,
    dense_reference,
    describe_head,
    effective_rounds,
    load_pretrained,
    load_transfer_data,
    prune_cell,
    recipe_of,
    transfer_spec,
    write_config,
)

PROBE_FILE = "probe.safetensors"


def schedule_counts(density: float, rounds: int, sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """Weights kept after each round: ``round(d_r * n)`` per threshold group of ``n`` weights
    (one group for a global threshold, one per layer for ``scope="layer"``)."""
    return [tuple(round(d * n) for n in sizes) for d in round_densities(density, rounds)]


def continuation(out: Path, cfg: TransferConfig, model: torch.nn.Module,
                 sparsities: Sequence[float]) -> tuple[Masks, int, str] | None:
    """``(masks, rounds done, folder)`` of the finished cell of the same method and seed whose
    per-round kept counts are the longest prefix of this cell's schedule, or None."""
    rounds = effective_rounds(cfg)
    if rounds < 2:
        return None
    scope = transfer_spec(cfg.method).scope(cfg.scope)
    ones = Masks.ones(model)
    sizes = [ones.total] if scope == "global" else [m.numel() for m in ones.values()]
    target = schedule_counts(1.0 - cfg.sparsity, rounds, sizes)
    best: tuple[int, str] | None = None
    for s in sparsities:
        folder = Cell(cfg.method, float(s), cfg.seed).folder
        path = out / folder
        if s >= cfg.sparsity or not done_file(path, TRANSFER).exists():
            continue
        done = read_json(done_file(path, TRANSFER), "a finished cell's summary")
        if not isinstance(done, dict):
            continue
        k = done.get("rounds")
        if (not isinstance(k, int) or not 0 < k < rounds or done.get("scope") != scope
                or not (path / "masks.safetensors").exists()):
            continue
        if schedule_counts(1.0 - done["sparsity"], k, sizes) == target[:k]:
            if best is None or k > best[0]:
                best = (k, folder)
    if best is None:
        return None
    masks = Masks.load(out / best[1] / "masks.safetensors").in_order_of(model)
    if masks.kept != sum(target[best[0] - 1]):  # the file is not what its summary says
        return None
    return masks, best[0], best[1]


def _save_probe(probe, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": probe.weight.contiguous(), "bias": probe.bias.contiguous()}, str(path))


def _load_probe(path: Path, block: dict):
    from safetensors.torch import load_file


    t = load_file(str(path))
    p = block["probe"]  # accuracies in percent there, fractions in a Probe
    hold = p.get("holdout_acc")
    return Probe(t["weight"], t["bias"], p["l2"], None if hold is None else hold / 100,
                 p["train_acc"] / 100, {})


def dense_finished(folder: Path) -> bool:
    """Whether a seed's dense reference is written: its summary and its probe."""
    return done_file(folder, TRANSFER).exists() and (folder / PROBE_FILE).exists()


def dense_cell(cfg: TransferConfig, data: TransferData, model: torch.nn.Module, folder: Path,
               weights: str, *, device: str, progress: bool,
               log: Callable[[str], object]) -> DenseReference:
    """The seed's dense reference: read back from ``folder`` when finished, else computed and
    written there (``summary.json`` and the probe that serves as scoring head)."""
    result_path, probe_path = done_file(folder, TRANSFER), folder / PROBE_FILE
    if dense_finished(folder):
        again = f"delete {folder} to compute it again"
        saved = read_json(result_path, "the dense reference", hint=again)
        block = saved.get("dense") if isinstance(saved, dict) else None
        if not isinstance(block, dict):
            raise DamagedFileError(f"the dense reference {result_path} has no 'dense' block; "
                                   f"{again}")
        return DenseReference(_load_probe(probe_path, block), block)
    write_config(folder, replace(cfg, method=DENSE, sparsity=0.0), data, weights)
    dense = dense_reference(cfg, data, model, finetune_dir=folder / "finetune", device=device,
                            progress=progress, log=log)
    _save_probe(dense.probe, probe_path)
    result = {"backbone": cfg.backbone, "dataset": data.full_train.name, "method": DENSE,
              "mode": cfg.mode, "seed": cfg.seed, "sparsity": 0.0, "density": 1.0,
              "image_size": data.size, "dense": dense.block, "accuracy_unit": "percent"}
    atomic_write_json(result_path, result)
    return dense


def run_transfer_sweep(base: TransferConfig, methods: Sequence[str], sparsities: Sequence[float],
                       seeds: Sequence[int], out: str | Path, *, device: str = "cpu",
                       threads: int | None = None, progress: bool = True,
                       log: Callable[[str], object] = print, env: dict | None = None) -> dict:
    """Run every unfinished cell (the dense reference of each seed first); return sweep.json."""
    out = Path(out)
    methods = [DENSE, *(m for m in canonical_methods(methods) if m != DENSE)]
    for m in methods[1:]:
        transfer_spec(m)  # e.g. refuses imp before any work
    sparsities = sorted(float(s) for s in sparsities)  # lower first: later ones continue them
    cells = plan_cells(methods, sparsities, seeds)
    if threads:
        torch.set_num_threads(threads)
    env = env if env is not None else environment(device)
    recipe = recipe_of(base).to_dict() if base.mode == "finetune" else None
    record, todo = start_sweep(out, cells, base.protocol(), kind=TRANSFER, methods=methods,
                               sparsities=sparsities, seeds=seeds, device=device, env=env,
                               extra={"recipe": recipe},
                               invocation={"jobs": 1, "threads": threads}, log=log)
    data = load_transfer_data(base) if todo else None
    for seed in dict.fromkeys(c.seed for c in todo):
        _run_seed(replace(base, seed=seed), data, [c for c in todo if c.seed == seed], out,
                  record, device=device, progress=progress, log=log)
    return close_sweep(out, record, cells)


def _run_seed(cfg: TransferConfig, data: TransferData, todo: list[Cell], out: Path, record: dict,
              *, device: str, progress: bool, log: Callable[[str], object]) -> None:
    """The unfinished cells of one seed: one backbone load, one dense reference (computed, or
    read back when finished), then each pruned cell on a copy of the backbone."""
    model, weights = load_pretrained(cfg, data, device)
    log(describe_head(model, cfg.backbone))
    found: list[DenseReference] = []

    def run_dense() -> dict:
        found.append(dense_cell(cfg, data, model, dense_folder, weights, device=device,
                                progress=progress, log=log))
        return {"final_test_acc": found[0].block["test_acc"]}

    # every folder is written holding its running.json, so two sweeps on one folder (one per
    # core) share the cells out instead of running the same one twice; a finished dense
    # reference is only read back, without the lock (every invocation reads it)
    dense_folder = out / Cell(DENSE, 0.0, cfg.seed).folder
    if todo[0].method == DENSE:
        log(f"  run    {todo[0].folder}")
    outcome = (run_guarded(run_dense) if dense_finished(dense_folder)
               else run_held(dense_folder, run_dense))
    if todo[0].method == DENSE:
        record_cell(out, record, todo[0], outcome, log)
        todo = todo[1:]
    if outcome.get("busy"):  # its cells wait for the reference another process computes
        log(f"  skip   the {len(todo)} other cell(s) of seed {cfg.seed}: its dense reference "
            "is being computed elsewhere; run the sweep again once it is done")
        return
    for cell in todo:
        if not found:
            record_cell(out, record, cell, {**outcome, "error": "dense reference of seed "
                                            f"{cfg.seed} failed: {outcome['error']}"}, log)
            continue
        log(f"  run    {cell.folder}")
        work = partial(_cell, replace(cfg, method=cell.method, sparsity=cell.sparsity), data,
                       model, found[0], out, cell, weights, record["sparsities"],
                       device=device, progress=progress, log=log)
        record_cell(out, record, cell, run_held(out / cell.folder, work), log)


def _cell(cfg: TransferConfig, data: TransferData, model: torch.nn.Module,
          dense: DenseReference, out: Path, cell: Cell, weights: str,
          sparsities: Sequence[float], *, device: str, progress: bool,
          log: Callable[[str], object]) -> dict:
    """One pruned cell on a copy of the seed's pre-trained model; its sweep.json fields. A
    cell another sweep finished since this one listed its work is read back, not run again."""
    state = cell_state(out, cell, TRANSFER)
    if state.state == "done":
        log(f"         {cell.folder} was finished by another sweep meanwhile")
        return _outcome(state.done)
    cell_model = copy.deepcopy(model)
    start = continuation(out, cfg, cell_model, sparsities)
    if start is not None:
        log(f"         continuing {start[2]} after its {start[1]} rounds")
    write_config(out / cell.folder, cfg, data, weights, sweep=str(out))
    return _outcome(prune_cell(cfg, data, cell_model, dense, out / cell.folder, device=device,
                               progress=progress, log=log, start=start, show_layers=False))


def _outcome(result: dict) -> dict:
    """The sweep.json fields of a finished cell, from its summary.json content."""
    return {"final_test_acc": result["pruned"]["test_acc"],
            "extra": {"rounds": result.get("rounds"),
                      "classifier_emptied": result.get("classifier_emptied"),
                      "continued_from": (result.get("continued_from") or {}).get("folder")}}


# --------------------------------------------------------------------------------------------
# command line (``pxprune sweep --transfer``; the options are registered by pxprune.cli.sweep)
# --------------------------------------------------------------------------------------------


__all__ = ["continuation", "dense_cell",
           "run_transfer_sweep", "schedule_counts"]

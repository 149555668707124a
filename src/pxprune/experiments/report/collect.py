"""Collect a report's cells: every finished cell under a folder (a sweep, or separate ``pxprune
run`` folders), checked as a sweep's resume checks them, the unfinished cells of the planned
grid, and the aggregate rows; runs of different protocols are refused, never averaged."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from ...errors import UsageError
from ...methods.spec import resolved_spec
from ..cell_check import ASIDE, TRAINING, TRANSFER, check_cell, done_files
from ..config import CELL_FIELDS, DENSE
from ..sweep.grid import Cell, plan_cells, sparsity_label
from ..sweep.records import SWEEP_FILE, read_record, run_protocol
from .statistics import aggregate, unique_sparsities

METRICS = {"final": "final_test_acc", "best": "best_test_acc"}
# what varies between the runs of one experiment, or only names a file: not the protocol
_NOT_PROTOCOL = (*CELL_FIELDS, "resolved_method", "masks", "masks_sha256")


def check_comparable(cells: list[dict], protocols: dict[str, dict]) -> None:
    """Refuse a folder whose runs differ in protocol, or hold one method, sparsity and seed
    twice: averaging them would pass one experiment off as another's seeds."""
    first: dict[str, str] = {}
    for cell in cells:
        key = f"{cell['method']} {sparsity_label(cell['sparsity'])} seed {cell['seed']}"
        if key in first:
            raise UsageError(f"{first[key]} and {cell['folder']} are the same cell ({key}); "
                             "report each folder on its own")
        first[key] = cell["folder"]
    if not cells:
        return
    ref_folder, ref = cells[0]["folder"], protocols[cells[0]["folder"]]
    for cell in cells[1:]:
        other = protocols[cell["folder"]]
        if other != ref:
            diff = sorted(k for k in {*ref, *other} if ref.get(k) != other.get(k))
            shown = ", ".join(f"{k} {ref.get(k)!r} vs {other.get(k)!r}" for k in diff[:3])
            raise UsageError(f"{ref_folder} and {cell['folder']} were run differently ({shown}); "
                             "their accuracies are not comparable: report each folder on its own")


def _read_cell(summary: dict, cfg: dict) -> dict:
    """One finished cell's identity and numbers, from its checked summary.json and config;
    ``_protocol`` holds what it must share with the cells it is compared with."""
    method = cfg.get("method", DENSE)
    if "resolved_method" not in cfg and method != DENSE:  # written before it was recorded:
        old = resolved_spec(method, legacy=True)  # label it by what it computed then
        method = old if old != resolved_spec(method) else method
    sparsity = 0.0 if method == DENSE else float(cfg.get("sparsity", 0.0))
    return {
        "method": method, "sparsity": sparsity, "seed": int(cfg.get("seed", 0)),
        "final_test_acc": summary.get("final_test_acc"),
        "best_test_acc": summary.get("best_test_acc"),
        "density": summary.get("density"), "epochs": summary.get("epochs"),
        "train_seconds": summary.get("train_seconds"),
        "prune_seconds": (summary.get("prune") or {}).get("prune_seconds"),
        "collapsed_layers": len(summary.get("collapsed_layers") or []),
        "dataset_name": summary.get("dataset_name"),
        "train_examples": summary.get("train_examples"),
        "test_examples": summary.get("test_examples"),
        "_protocol": run_protocol(cfg),
    }


def _read_transfer_cell(res: dict, cfg: dict | None = None) -> dict:
    """One finished transfer cell (or dense reference) from its checked summary: the pruned
    (dense) test accuracy after the refitted probe, or after fine-tuning in finetune mode."""
    method = res.get("method", DENSE)
    block = res["dense"] if method == DENSE else res["pruned"]
    finetune, probe = block.get("finetune") or {}, block.get("probe") or {}
    return {
        "method": method, "sparsity": 0.0 if method == DENSE else float(res["sparsity"]),
        "seed": int(res.get("seed", 0)), "final_test_acc": block.get("test_acc"),
        "best_test_acc": finetune.get("best_test_acc"), "density": res.get("density"),
        "epochs": finetune.get("epochs"),
        "train_seconds": finetune.get("train_seconds", probe.get("seconds")),
        "prune_seconds": res.get("prune_seconds"),
        "collapsed_layers": len(res.get("collapsed_layers") or []),
        "dataset_name": res.get("dataset"), "train_examples": probe.get("num_train"),
        "test_examples": probe.get("num_test"), "rounds": res.get("rounds"),
    }


def _invocation_of(summary_path: Path, invocations: list[dict]) -> dict:
    """When the cell finished and which sweep invocation (hence which commit) ran it."""
    finished = datetime.fromtimestamp(summary_path.stat().st_mtime, timezone.utc)
    index = None
    for i, inv in enumerate(invocations):
        started = inv.get("started")
        if started and datetime.fromisoformat(started) <= finished:
            index = i
    commit = invocations[index].get("git_commit") if index is not None else None
    return {"finished": finished.isoformat(timespec="seconds"), "invocation": index,
            "git_commit": commit}


def _read_record(sweep_dir: Path, metric: str) -> dict:
    """The folder's ``sweep.json`` ({} for a folder of separate runs); ``--metric best`` is
    refused for a probe transfer sweep (one accuracy per cell)."""
    record_path = sweep_dir / SWEEP_FILE
    record = read_record(record_path) if record_path.exists() else {}
    if record.get("kind") == TRANSFER and metric == "best" and (
            record.get("protocol") or {}).get("mode") != "finetune":
        raise UsageError("a probe transfer sweep has one accuracy per cell: --metric best "
                         "applies to training and fine-tuning sweeps")
    return record


def _finished(sweep_dir: Path, record: dict, kind: str,
              places: dict[str, Cell]) -> tuple[list[dict], list[dict]]:
    """The finished cells (checked; refused when not comparable) and the damaged ones."""
    read = _read_transfer_cell if kind == TRANSFER else _read_cell
    cells, damaged = [], []
    protocols: dict[str, dict] = {}
    for path in done_files(sweep_dir, kind):
        rel = path.parent.relative_to(sweep_dir)
        if (kind == TRANSFER and path.parent == sweep_dir) or any(
                part.startswith(ASIDE) for part in rel.parts):  # a damaged cell set aside
            continue
        place = places.get(rel.as_posix())
        where = {"method": None, "sparsity": None, "seed": None} if place is None else {
            "method": place.method, "sparsity": place.sparsity, "seed": place.seed}
        state = check_cell(path.parent, place and where, kind)
        if state.state != "done":  # listed as damaged, left out of the table
            damaged.append({**where, "folder": rel.as_posix(), "status": state.state,
                            "error": state.reason})
            continue
        cell = read(state.done, state.config)
        cell["folder"] = rel.as_posix()
        cell.update(_invocation_of(path, record.get("invocations") or []))
        cells.append(cell)
        if kind == TRAINING:
            protocols[cell["folder"]] = cell.pop("_protocol")
    if kind == TRAINING:
        check_comparable(cells, protocols)
    return cells, damaged


def _unfinished(sweep_dir: Path, planned: list[Cell], places: dict[str, Cell], kind: str,
                cells: list[dict], damaged: list[dict]) -> list[dict]:
    """The damaged cells, then every planned cell not finished (missing, partial, failed)."""
    seen = {c["folder"] for c in cells} | {c["folder"] for c in damaged}
    missing = [c for c in damaged if c["folder"] not in places]
    for cell in planned:
        if cell.folder in seen:
            missing += [c for c in damaged if c["folder"] == cell.folder]
            continue
        state = check_cell(sweep_dir / cell.folder, None, kind)
        entry = {"method": cell.method, "sparsity": cell.sparsity, "seed": cell.seed,
                 "folder": cell.folder, "status": state.state}
        if state.state == "failed":
            entry["error"] = state.reason
        missing.append(entry)
    return missing


def collect(sweep_dir: str | Path, metric: str = "final") -> dict:
    """Every finished cell, the aggregate rows, and the unfinished cells of the planned grid."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep folder {sweep_dir}")
    record = _read_record(sweep_dir, metric)
    without_record = not record
    kind = record.get("kind", TRAINING)
    planned: list[Cell] = []
    if record.get("methods"):
        planned = plan_cells(record["methods"], record.get("sparsities") or [],
                             record.get("seeds") or [0])
    places = {c.folder: c for c in planned}
    cells, damaged = _finished(sweep_dir, record, kind, places)
    missing = _unfinished(sweep_dir, planned, places, kind, cells, damaged)
    if without_record and kind == TRAINING and cells:  # separate runs: what they share
        record = _record_of_runs(sweep_dir, cells)
    methods = list(record.get("methods") or [])
    methods += [m for m in dict.fromkeys(c["method"] for c in cells) if m not in methods]
    sparsities = sorted({*(float(s) for s in record.get("sparsities") or []),
                         *(c["sparsity"] for c in cells if c["method"] != DENSE)})
    key = METRICS[metric]
    return {"sweep_dir": str(sweep_dir), "kind": kind, "record": record, "metric": key,
            "cells": cells,
            "rows": aggregate(cells, key), "missing": missing, "methods": methods,
            "sparsities": unique_sparsities(sparsities)}


def _record_of_runs(folder: Path, cells: list[dict]) -> dict:
    """For a folder of separate ``pxprune run`` folders (no sweep.json): the protocol is what
    their configurations share, the environment and resolved recipe those their summaries
    recorded, so a report of a user's own runs names its model, data and versions."""
    summaries = []
    for cell in cells:
        try:
            summaries.append(json.loads((folder / cell["folder"] / "summary.json").read_text()))
        except (OSError, ValueError):  # checked already; a race leaves the field out
            continue
    configs = [s.get("config") or {} for s in summaries]
    shared = {k: v for k, v in (configs[0] if configs else {}).items()
              if k not in _NOT_PROTOCOL and all(c.get(k) == v for c in configs)}
    recipes = [s.get("recipe") for s in summaries]
    envs = [s.get("environment") or {} for s in summaries]
    return {"protocol": shared,
            "recipe": recipes[0] if recipes and all(r == recipes[0] for r in recipes) else {},
            "environment": envs[-1] if envs else {},
            "seeds": sorted({c["seed"] for c in cells if c.get("seed") is not None})}


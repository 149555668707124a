"""``sweep.json``, a sweep's record: its protocol (what every cell shares), environment and
invocations; read, checked and written here for the sweep, its status and the report."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from ...errors import DamagedFileError, UsageError
from ...io import atomic_write_json, read_json
from ...training.recipes import get_recipe
from ..cell_check import DONE_FILES, TRAINING
from ..config import CELL_FIELDS, RunConfig
from ..provenance import cli_argv
from ..provenance import environment as base_environment

FORMAT = "pxprune.sweep/1"
SWEEP_FILE = "sweep.json"
ENV_VARS = ("PXPRUNE_DATA", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")  # recorded with the command

# RunConfig fields added after sweeps were recorded: left out of the protocol while at their
# default, so that an older sweep.json still matches.
LATER_FIELDS = {"precision": None, "test_dataset": None, "holdout": 0.0}
NOT_PROTOCOL = ("allow_disconnected",)  # changes whether a cell may finish, not its result


def protocol_of(base: RunConfig) -> dict:
    """The fields shared by every cell (the RunConfig without method, sparsity and seed)."""
    return comparable_protocol({k: v for k, v in asdict(base).items() if k not in CELL_FIELDS})


def comparable_protocol(protocol: dict) -> dict:
    """``protocol`` without NOT_PROTOCOL fields and LATER_FIELDS at their default, so that a
    sweep.json written while either was still recorded matches the same protocol today."""
    return {k: v for k, v in protocol.items() if k not in NOT_PROTOCOL
            and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def run_protocol(cfg: dict) -> dict:
    """What one run (a cell's saved config) must share with every run it is averaged or paired
    with: its config without method, sparsity and seed (and later fields unset or at their
    default), comparable with :func:`protocol_of`."""
    rest = {k: v for k, v in cfg.items() if k not in (*CELL_FIELDS, "resolved_method")
            and not (k in LATER_FIELDS and v in (None, LATER_FIELDS[k]))}
    return comparable_protocol(rest)


def resolved_recipe(base: RunConfig) -> dict:
    """The training recipe every cell uses, with the sweep's overrides applied."""
    return get_recipe(base.recipe, **base.recipe_overrides()).to_dict()


def environment(device: str) -> dict:
    """Device name, torch/Python versions, git commit, uncommitted files and the command line."""
    env = base_environment(device)
    env["command"] = "pxprune " + shlex.join(cli_argv())
    env["env_vars"] = {k: os.environ[k] for k in ENV_VARS if k in os.environ}
    return env


def save_record(out: Path, record: dict) -> None:
    """Write ``sweep.json`` atomically (an interrupted sweep never leaves a truncated file),
    merged first with what other invocations wrote since ``record`` was read: two sweeps on one
    folder (two seeds side by side, two launchers) each keep the other's grid, invocations and
    cell outcomes. ``record`` is updated in place to the merged content."""
    path = out / SWEEP_FILE
    with _folder_lock(out):  # no other writer between this read and the write
        try:
            disk = json.loads(path.read_text())
        except (OSError, ValueError):
            disk = None  # none yet, or unreadable: the next read reports it
        if isinstance(disk, dict) and isinstance(disk.get("cells"), dict):
            merge_records(record, disk)
        atomic_write_json(path, record)


FINAL_STATES = ("done", "failed", "damaged", "running")


def merge_records(mine: dict, theirs: dict) -> None:
    """Add to ``mine`` the grid values, invocations and cells only ``theirs`` has; a cell both
    hold keeps the entry that knows more (an outcome over none, done over anything else)."""
    for key in ("methods", "sparsities", "seeds"):
        if isinstance(theirs.get(key), list):
            mine[key] = list(mine.get(key, [])) + [x for x in theirs[key]
                                                   if x not in mine.get(key, [])]
    seen = {(i.get("started"), i.get("command")) for i in mine.get("invocations", [])}
    extra = [i for i in theirs.get("invocations") or []
             if isinstance(i, dict) and (i.get("started"), i.get("command")) not in seen]
    if extra:
        mine["invocations"] = sorted(mine.get("invocations", []) + extra,
                                     key=lambda i: str(i.get("started")))
    cells = mine.setdefault("cells", {})
    for key, entry in theirs["cells"].items():
        if not isinstance(entry, dict):
            continue
        own = cells.get(key)
        if (own is None or (entry.get("status") == "done" and own.get("status") != "done")
                or (own.get("status") not in FINAL_STATES
                    and entry.get("status") in FINAL_STATES)):
            cells[key] = entry


@contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """An exclusive lock on the sweep folder itself (no file added), where the system has
    ``flock``; elsewhere nothing (one writer at a time is then the user's to keep)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_record(path: Path) -> dict:
    """A ``sweep.json``; a truncated or foreign one is one line naming it (DamagedFileError)."""
    record = read_json(path, "the sweep record", hint="restore it, or move it aside and re-run "
                       "the sweep command to start a new record")
    lists = ("methods", "sparsities", "seeds", "invocations")
    if (not isinstance(record, dict) or not isinstance(record.get("cells", {}), dict)
            or any(not isinstance(record.get(k, []), list) for k in lists)
            or not all(isinstance(e, dict) for e in record.get("cells", {}).values())
            or record.get("kind", TRAINING) not in DONE_FILES):
        raise DamagedFileError(f"{path} is not a pxprune sweep record")
    return record


def load_record(out: Path, protocol: dict, kind: str = TRAINING) -> dict:
    """The existing ``sweep.json`` (checked against this protocol) or an empty record."""
    path = out / SWEEP_FILE
    if not path.exists():
        return {"format": FORMAT, "methods": [], "sparsities": [], "seeds": [], "invocations": [],
                "cells": {}}
    record = read_record(path)
    if record.get("kind", TRAINING) != kind:
        raise UsageError(f"{out} holds a {record.get('kind', TRAINING)} sweep, not a {kind} "
                         "sweep; use another --out")
    stored = comparable_protocol(record.get("protocol") or {})
    if stored != comparable_protocol(protocol):
        changed = sorted(k for k in set(protocol) | set(stored)
                         if protocol.get(k) != stored.get(k))
        raise UsageError(f"{out} holds a sweep with another protocol (differs in: "
                         f"{', '.join(changed)}); use another --out")
    return record

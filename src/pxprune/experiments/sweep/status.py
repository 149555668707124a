"""``pxprune sweep --status DIR``: how many cells of a sweep are done, running, failed, pending.

Read from the cell folders, never from a job scheduler, so it is the same for every launcher and
works from any machine that sees the folder: done = the kind's done file (``summary.json``),
intact (:mod:`pxprune.experiments.cell_check`; damaged = it fails that check and runs again
when the sweep is re-run),
running = a live ``running.json`` (:mod:`pxprune.experiments.cell_lock`: the writer's process
exists on this
host, or its heartbeat is younger than ``cell_lock.STALE_S``), failed = ``error.json``, pending =
the rest: submitted jobs not started yet, cells never started, and interrupted cells (a folder
with ``config.json``, e.g. a killed job), which resume when the sweep is submitted again.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DamagedFileError, UsageError
from ..cell_check import TRAINING
from ..cell_lock import describe, live_holder
from .cells import cell_state
from .grid import Cell
from .records import SWEEP_FILE, read_record

STATES = ("done", "running", "failed", "damaged", "pending")


def sweep_status(out: str | Path) -> dict:
    """Counts per state, and each cell's state and detail (job, holder, error)."""
    out = Path(out)
    path = out / SWEEP_FILE
    if not path.exists():
        raise UsageError(f"no sweep in {out} (no {SWEEP_FILE})")
    record = read_record(path)
    kind = record.get("kind", TRAINING)
    cells = []
    for key, entry in record.get("cells", {}).items():
        try:
            cell = Cell(str(entry["method"]), float(entry["sparsity"]), int(entry["seed"]))
        except (KeyError, TypeError, ValueError):
            raise DamagedFileError(f"{path}: the entry of cell {key!r} is not a cell") from None
        checked = cell_state(out, cell, kind)
        found = checked.state
        holder = live_holder(out / cell.folder) if found != "done" else None
        detail = ""
        if found == "done":
            state = "done"
        elif holder is not None:
            state, detail = "running", describe(holder)
        elif found in ("failed", "damaged"):
            state, detail = found, checked.reason[:200]
        else:
            state = "pending"
            detail = "interrupted, resumes when re-submitted" if found == "partial" else (
                f"submitted as job {entry['job_id']}" if entry.get("status") == "submitted"
                else "not started")
        cells.append({"folder": key, "state": state, "detail": detail})
    counts = {s: sum(c["state"] == s for c in cells) for s in STATES}
    interrupted = sum(c["detail"].startswith("interrupted") for c in cells)
    return {"sweep_dir": str(out), "kind": kind, "counts": counts, "interrupted": interrupted,
            "cells": cells}


def format_status(status: dict, max_lines: int = 50) -> str:
    """The counts on one line, then the running and failed cells (at most ``max_lines``)."""
    c = status["counts"]
    lines = [f"{status['sweep_dir']}: {len(status['cells'])} cells: done {c['done']}, "
             f"running {c['running']}, failed {c['failed']}, pending {c['pending']} "
             f"({status['interrupted']} interrupted)"
             + (f", damaged {c['damaged']} (run again by the sweep command)" if c["damaged"]
                else "")]
    shown = [x for x in status["cells"] if x["state"] in ("running", "failed", "damaged")]
    for x in shown[:max_lines]:
        lines.append(f"  {x['state']:<8} {x['folder']}: {x['detail']}")
    if len(shown) > max_lines:
        lines.append(f"  ... and {len(shown) - max_lines} more")
    return "\n".join(lines)

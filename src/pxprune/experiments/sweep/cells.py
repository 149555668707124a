"""The state of one cell of a sweep (done, damaged, failed, partial, missing), and the refusal
of a cell folder whose method meant something else when it was written."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import UsageError
from ...methods.spec import resolved_spec
from ..cell_check import TRAINING, CellState, check_cell
from ..config import DENSE
from .grid import Cell


def cell_state(out: Path, cell: Cell, kind: str = TRAINING) -> CellState:
    """The checked state of a cell's folder (:func:`pxprune.experiments.cell_check.check_cell`):
    done and intact, damaged, failed, partial (started) or missing."""
    expected = {"method": cell.method, "sparsity": cell.sparsity, "seed": cell.seed}
    return check_cell(out / cell.folder, expected, kind)


def cell_status(out: Path, cell: Cell, kind: str = TRAINING) -> str:
    """``done`` (its done file intact), ``damaged``, ``failed`` (error.json), ``partial``
    (started) or ``missing``."""
    return cell_state(out, cell, kind).state


def check_resolved_method(folder: Path, method: str) -> None:
    """Refuse a cell folder whose method meant something else when it was written (``px``
    before 2026-11-30 was the bound): finished or not, it is never reused or reported as the
    current definition."""
    path = folder / "config.json"
    if method == DENSE or not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return  # the cell check reports it damaged
    if not isinstance(saved, dict) or not isinstance(saved.get("method", method), str):
        return
    before = saved.get("resolved_method") or resolved_spec(saved.get("method", method),
                                                            legacy=True)
    now = resolved_spec(method)
    if before != now:
        raise UsageError(f"{folder} was pruned with {before!r}, but {method!r} now means "
                         f"{now!r} (a default changed); use another --out")

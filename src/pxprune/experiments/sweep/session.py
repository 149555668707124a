"""One invocation of a sweep, whichever launcher runs its cells: open ``sweep.json`` and find
the cells still to run, record each cell's outcome (in the record and the cell's folder), close.

A finished cell (its kind's done file, intact) is skipped, an interrupted one resumes, a cell
another live process holds (``running.json``) is left to it, a damaged one has its files set
aside and runs again; a cell that raises does not stop the sweep: its error goes to
``<cell>/error.json`` and ``sweep.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from ...io import atomic_write_json
from ..cell_check import ERROR_FILE, set_aside
from ..cell_lock import describe, live_holder
from ..folder import refuse_foreign
from .cells import cell_state, check_resolved_method
from .grid import Cell
from .records import FORMAT, load_record, save_record


def _merge(old: Sequence, new: Sequence) -> list:
    return list(old) + [x for x in new if x not in old]


def _open_record(out: Path, protocol: dict, kind: str, methods: Sequence[str],
                 sparsities: Sequence[float], seeds: Sequence[int], device: str, env: dict,
                 extra: dict, invocation: dict) -> dict:
    """The record with this invocation's grid, environment and invocation entry added."""
    record = load_record(out, protocol, kind)
    record.update({
        "format": FORMAT, "kind": kind, "protocol": protocol, **extra,
        "methods": _merge(record["methods"], methods),
        "sparsities": _merge(record["sparsities"], [float(s) for s in sparsities]),
        "seeds": _merge(record["seeds"], [int(s) for s in seeds]),
        "device": str(device), "environment": env,
    })
    record["invocations"].append({
        "command": env.get("command"), "started": datetime.now(timezone.utc).isoformat(),
        **invocation, "device": str(device),
        "git_commit": env.get("git_commit"), "git_dirty": env.get("git_dirty"),
        "torch": env.get("torch"),
    })
    return record


def _sort_cells(out: Path, record: dict, cells: Sequence[Cell], kind: str,
                log: Callable[[str], object]) -> tuple[list[Cell], list[Cell]]:
    """The cells to run and those running elsewhere; done ones are marked done, damaged ones
    set aside (never deleted) to run again."""
    todo, busy = [], []
    for cell in cells:
        state = cell_state(out, cell, kind)
        entry = record["cells"].setdefault(cell.key, {**asdict(cell), "folder": cell.folder})
        if state.state == "done":
            entry["status"] = "done"
            continue
        holder = live_holder(out / cell.folder)
        if holder is not None:  # another launcher or invocation is running it right now
            busy.append(cell)
            log(f"  skip   {cell.folder}: running ({describe(holder)})")
            continue
        if state.state == "damaged":  # its files set aside (never deleted); it runs again
            aside = set_aside(out / cell.folder)
            entry.update(status="damaged", error=state.reason)
            log(f"  damaged {cell.folder}: {state.reason}; runs again"
                + (f" (its files are in {aside})" if aside else ""))
        todo.append(cell)
    return todo, busy


def start_sweep(out: Path, cells: Sequence[Cell], protocol: dict, *, kind: str,
                methods: Sequence[str], sparsities: Sequence[float], seeds: Sequence[int],
                device: str, env: dict, extra: dict, invocation: dict,
                log: Callable[[str], object]) -> tuple[dict, list[Cell]]:
    """Open (or create) ``sweep.json``, refuse another kind or protocol, record this invocation;
    return the record and the cells still to run (those without their kind's done file)."""
    refuse_foreign(out, "sweep")  # a run's, pruning's or transfer's folder: one line, untouched
    out.mkdir(parents=True, exist_ok=True)
    record = _open_record(out, protocol, kind, methods, sparsities, seeds, device, env, extra,
                          invocation)
    for cell in cells:  # before anything runs: no cell of another definition is reused
        check_resolved_method(out / cell.folder, cell.method)
    todo, busy = _sort_cells(out, record, cells, kind, log)
    how = (f"as {invocation['launcher']} jobs" if invocation.get("launcher", "local") != "local"
           else f"{invocation.get('jobs', 1)} at a time")
    log(f"sweep {out}: {len(cells)} cells, {len(cells) - len(todo) - len(busy)} already "
        f"finished, {len(busy)} running elsewhere, {len(todo)} to run ({how})")
    save_record(out, record)
    return record, todo


def write_cell_outcome(out: Path, cell: Cell, result: dict) -> None:
    """What a cell's folder keeps of its outcome, whichever launcher ran it: a failure writes
    ``error.json`` (error and traceback), a success removes an old one."""
    error_path = out / cell.folder / ERROR_FILE
    if result["ok"]:
        error_path.unlink(missing_ok=True)
        return
    error_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(error_path, {**asdict(cell), "error": result["error"],
                                   "traceback": result.get("traceback", ""),
                                   "time": datetime.now(timezone.utc).isoformat()})


def record_cell(out: Path, record: dict, cell: Cell, result: dict,
                log: Callable[[str], object], *, write_folder: bool = True) -> None:
    """Write one cell's outcome to ``sweep.json``: done (its accuracy and ``result["extra"]``)
    or failed, and (``write_folder``: unless the job already did) to the cell's folder. A cell
    found running elsewhere (``busy``) is left to its runner."""
    entry = record["cells"][cell.key]
    if result.get("busy"):
        entry["status"] = "running"
        log(f"  skip   {cell.folder}: {result['error']}")
        save_record(out, record)
        return
    entry["seconds"] = round(result["seconds"], 2)
    if result.get("device") is not None:
        entry["device"] = result["device"]
    if write_folder:
        write_cell_outcome(out, cell, result)
    if result["ok"]:
        entry.update(status="done", final_test_acc=result["final_test_acc"],
                     **result.get("extra", {}))
        entry.pop("error", None)
        acc = result["final_test_acc"]
        shown = f"{acc:.2f}" if isinstance(acc, (int, float)) else str(acc)
        log(f"  done   {cell.folder}: test acc {shown} % ({result['seconds']:.0f} s)")
    else:
        entry.update(status="failed", error=result["error"])
        log(f"  FAILED {cell.folder}: {result['error']}")
    save_record(out, record)


def close_sweep(out: Path, record: dict, cells: Sequence[Cell]) -> dict:
    """Record the end of this invocation and which of its cells failed; return the record."""
    keys = {c.key for c in cells}
    failed = [k for k, e in record["cells"].items() if e.get("status") == "failed" and k in keys]
    record["invocations"][-1]["finished"] = datetime.now(timezone.utc).isoformat()
    record["invocations"][-1]["failed_cells"] = failed
    save_record(out, record)
    return record

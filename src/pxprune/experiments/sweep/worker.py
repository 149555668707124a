"""One cell of a training sweep run in this process, whichever launcher started it (a local
pool worker, a submitit job): its folder's lock held, its log in ``<cell>/sweep.log``, and any
exception turned into a recorded failure so that one failed cell never ends a sweep."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ..cell_lock import CellBusy, CellLock
from ..config import RunConfig
from ..run import run_experiment


def run_guarded(work: Callable[[], dict]) -> dict:
    """``{"ok": True, **work(), "seconds"}``, or ``{"ok": False, "error", "traceback",
    "seconds"}`` when it raises (KeyboardInterrupt passes): one failed cell must not end a sweep."""
    start = time.perf_counter()
    try:
        outcome = work()
    except Exception as exc:  # noqa: BLE001 - recorded in the cell's error.json
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - start}
    return {"ok": True, **outcome, "seconds": time.perf_counter() - start}


def run_cell(cfg: RunConfig, folder: Path, device: str, threads: int | None, progress: bool,
             log: Callable[[str], object], job_id: str | None = None) -> dict:
    """Run one cell holding its ``running.json``, turning any exception into a recorded failure
    (KeyboardInterrupt passes); a cell another live process holds is not run (``busy``)."""
    if threads:
        import torch

        torch.set_num_threads(threads)

    def work() -> dict:
        summary = run_experiment(cfg, folder, device=device, progress=progress, log=log)
        return {"final_test_acc": summary.get("final_test_acc")}

    return {**run_held(folder, work, job_id), "device": device}


def run_held(folder: Path, work: Callable[[], dict], job_id: str | None = None) -> dict:
    """:func:`run_guarded` holding ``folder``'s ``running.json``; a folder another live process
    holds is not run: ``{"ok": False, "busy": True, "error"}`` (the sweep leaves it to them)."""
    try:
        with CellLock(folder, job_id):
            return run_guarded(work)
    except CellBusy as exc:
        return {"ok": False, "busy": True, "error": str(exc), "seconds": 0.0}


def run_logged_cell(cfg: dict, folder: str | Path, device: str, threads: int | None,
                    job_id: str | None = None) -> dict:
    """Run one cell in this process, logging to ``<cell>/sweep.log``: the body of a local pool
    worker and of a submitit job alike. A Ctrl-C / SIGINT is logged and passes."""
    log_path = Path(folder) / "sweep.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as fh:
        def log(msg: str) -> None:
            fh.write(msg + "\n")
            fh.flush()

        try:
            return run_cell(RunConfig.from_dict(cfg), Path(folder), device, threads, False, log,
                            job_id)
        except KeyboardInterrupt:
            log("interrupted; the cell resumes from its checkpoint when the sweep is re-run")
            raise


def cell_worker(cfg: dict, folder: str, device: str, threads: int | None, conn) -> None:
    """Child-process entry point: run one cell, send back the outcome."""
    try:
        result = run_logged_cell(cfg, folder, device, threads)
    except KeyboardInterrupt:  # Ctrl-C / timeout reach every worker: the parent reports it
        return
    conn.send(result)
    conn.close()

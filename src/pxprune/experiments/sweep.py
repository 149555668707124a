"""The grid of a sweep (method x sparsity x seed), its ``sweep.json``, and the local launcher.

Layout of a sweep folder ``OUT``::

    OUT/sweep.json                          grid, protocol, environment, every invocation, cells
    OUT/<method>/s<sparsity %>/seed<k>/     one pipeline run folder per cell (e.g. px/s98.20/seed0)
    OUT/dense/seed<k>/                      the dense baseline, once per seed
    OUT/submitit/                           job pickles and logs (``--launcher submitit`` only)

Each cell is :func:`pxprune.experiments.run.run_experiment` run by :func:`run_logged_cell`,
whichever
launcher started it (this module's process pool, or a submitit job:
:mod:`pxprune.experiments.submit`).
So a finished cell (``summary.json``) is skipped, an interrupted one resumes from its saved masks
and training checkpoint, and re-running the same command finishes a sweep. A cell that raises does
not stop the sweep: its error goes to ``<cell>/error.json`` and ``sweep.json``, the other cells
still run, and the command exits 1. While a cell runs it holds ``<cell>/running.json`` with a
heartbeat (:mod:`pxprune.experiments.cell_lock`): ``sweep --status`` counts it as running, and no
other
launcher or invocation starts the same cell meanwhile.

``--jobs K`` runs K cells at once, each in its own (spawned) process, the cores split between
them (``--threads``, default ``cpu_count // K`` per cell, on a GPU too); on one GPU the K small
trainings share the device as K processes (each with its own CUDA context), which helps when a
single CIFAR ResNet-20 run cannot fill it; with ``--device cuda`` and several visible GPUs the K
slots go round-robin over them (:class:`DeviceSlots`). Running the K trainings as CUDA streams
inside one process was not implemented: this code was written without a GPU, so no GPU
throughput numbers for either variant exist yet (``benchmarks/gpu_session.sh`` measures them).
"""

from __future__ import annotations

import json
import os
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from multiprocessing.connection import wait
from pathlib import Path

from ..errors import DamagedFileError
from ..io import atomic_write_json
from ..masks import PruningError
from ..methods.spec import canonical, check_method_spec, folder_name, resolved_spec
from ..training.recipes import get_recipe
from .cell_check import DONE_FILES, ERROR_FILE, TRAINING, CellState, check_cell, set_aside
from .cell_lock import CellBusy, CellLock, describe, live_holder
from .config import CELL_FIELDS, DENSE, RunConfig
from .folder import refuse_foreign
from .provenance import cli_argv
from .provenance import environment as base_environment
from .resolve import UsageError
from .run import run_experiment
from .stack_run import plan_stacks, run_stacks

FORMAT = "pxprune.sweep/1"
SWEEP_FILE = "sweep.json"
DEFAULT_METHODS = ("px", "snip", "grasp", "synflow", "ntksap", "random", "magnitude")
ENV_VARS = ("PXPRUNE_DATA", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")  # recorded with the command


@dataclass(frozen=True)
class Cell:
    """One run of the grid; ``sparsity`` is 0 for the dense baseline."""

    method: str
    sparsity: float
    seed: int

    @property
    def folder(self) -> str:
        """The cell's folder relative to the sweep folder, e.g. ``px/s98.20/seed0``."""
        if self.method == DENSE:
            return f"{DENSE}/seed{self.seed}"
        return f"{method_folder(self.method)}/{sparsity_label(self.sparsity)}/seed{self.seed}"

    @property
    def key(self) -> str:
        """The cell's name in ``sweep.json`` (its folder)."""
        return self.folder


def method_folder(method: str) -> str:
    """The folder of a method spec: ``px`` or ``px+variant=cvpr2024`` for px[variant=cvpr2024]."""
    return method if method == DENSE else folder_name(method)


def canonical_methods(methods: Sequence[str]) -> list[str]:
    """Check each method spec (name and options) and write it canonically (sorted keys)."""
    out = []
    for m in methods:
        if m == DENSE:
            out.append(m)
            continue
        try:
            check_method_spec(m)
        except PruningError as exc:
            raise UsageError(str(exc)) from None
        out.append(canonical(m))
    if len(set(out)) != len(out):
        raise UsageError(f"methods {list(methods)} name the same spec twice")
    return out


def sparsity_label(sparsity: float) -> str:
    """The folder name of a sparsity: ``s98.20`` for 0.982 (two decimals of the percentage)."""
    return f"s{sparsity * 100:.2f}"


def plan_cells(methods: Sequence[str], sparsities: Sequence[float],
               seeds: Sequence[int]) -> list[Cell]:
    """Every cell of the grid, seed-major so that partial sweeps cover whole seeds first."""
    labels = [sparsity_label(s) for s in sparsities]
    if len(set(labels)) != len(labels):
        raise UsageError(f"sparsities {list(sparsities)} collide at two decimals of a percent")
    if any(not 0.0 < s < 1.0 for s in sparsities):
        raise UsageError("sparsities must lie strictly between 0 and 1 (use method 'dense')")
    cells: list[Cell] = []
    for seed in seeds:
        for method in methods:
            if method == DENSE:
                cells.append(Cell(DENSE, 0.0, seed))
            else:
                cells.extend(Cell(method, s, seed) for s in sparsities)
    return cells


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
    """Write ``sweep.json`` (atomically)."""
    atomic_write_json(out / SWEEP_FILE, record)


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


def _merge(old: Sequence, new: Sequence) -> list:
    return list(old) + [x for x in new if x not in old]


def read_record(path: Path) -> dict:
    """A ``sweep.json``; a truncated or foreign one is one line naming it (DamagedFileError)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).splitlines() or [""])[0][:120]
        raise DamagedFileError(f"{path} is unreadable (truncated or not JSON: {first}); "
                               "restore it, or move it aside and re-run the sweep command to "
                               "start a new record") from None
    lists = ("methods", "sparsities", "seeds", "invocations")
    if (not isinstance(record, dict) or not isinstance(record.get("cells", {}), dict)
            or any(not isinstance(record.get(k, []), list) for k in lists)
            or not all(isinstance(e, dict) for e in record.get("cells", {}).values())
            or record.get("kind", TRAINING) not in DONE_FILES):
        raise DamagedFileError(f"{path} is not a pxprune sweep record")
    return record


def _load_sweep_file(out: Path, protocol: dict, kind: str = TRAINING) -> dict:
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
            return _run_cell(RunConfig.from_dict(cfg), Path(folder), device, threads, False, log,
                             job_id)
        except KeyboardInterrupt:
            log("interrupted; the cell resumes from its checkpoint when the sweep is re-run")
            raise


def _cell_worker(cfg: dict, folder: str, device: str, threads: int | None, conn) -> None:
    """Child-process entry point: run one cell, send back the outcome."""
    try:
        result = run_logged_cell(cfg, folder, device, threads)
    except KeyboardInterrupt:  # Ctrl-C / timeout reach every worker: the parent reports it
        return
    conn.send(result)
    conn.close()


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


def _run_cell(cfg: RunConfig, folder: Path, device: str, threads: int | None, progress: bool,
              log: Callable[[str], object], job_id: str | None = None) -> dict:
    """Run one cell holding its ``running.json``, turning any exception into a recorded failure
    (KeyboardInterrupt passes); a cell another live process holds is not run (``busy``)."""
    if threads:
        import torch

        torch.set_num_threads(threads)

    def work() -> dict:
        summary = run_experiment(cfg, folder, device=device, progress=progress, log=log)
        return {"final_test_acc": summary.get("final_test_acc")}

    try:
        with CellLock(folder, job_id):
            result = run_guarded(work)
    except CellBusy as exc:
        return {"ok": False, "busy": True, "error": str(exc), "seconds": 0.0, "device": device}
    return {**result, "device": device}


def start_sweep(out: Path, cells: Sequence[Cell], protocol: dict, *, kind: str,
                methods: Sequence[str], sparsities: Sequence[float], seeds: Sequence[int],
                device: str, env: dict, extra: dict, invocation: dict,
                log: Callable[[str], object]) -> tuple[dict, list[Cell]]:
    """Open (or create) ``sweep.json``, refuse another kind or protocol, record this invocation;
    return the record and the cells still to run (those without their kind's done file)."""
    refuse_foreign(out, "sweep")  # a run's, pruning's or transfer's folder: one line, untouched
    out.mkdir(parents=True, exist_ok=True)
    record = _load_sweep_file(out, protocol, kind)
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
    for cell in cells:  # before anything runs: no cell of another definition is reused
        check_resolved_method(out / cell.folder, cell.method)
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
    how = (f"as {invocation['launcher']} jobs" if invocation.get("launcher", "local") != "local"
           else f"{invocation.get('jobs', 1)} at a time")
    log(f"sweep {out}: {len(cells)} cells, {len(cells) - len(todo) - len(busy)} already "
        f"finished, {len(busy)} running elsewhere, {len(todo)} to run ({how})")
    atomic_write_json(out / SWEEP_FILE, record)
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
        atomic_write_json(out / SWEEP_FILE, record)
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
        log(f"  done   {cell.folder}: test acc {result['final_test_acc']} % "
            f"({result['seconds']:.0f} s)")
    else:
        entry.update(status="failed", error=result["error"])
        log(f"  FAILED {cell.folder}: {result['error']}")
    atomic_write_json(out / SWEEP_FILE, record)


def close_sweep(out: Path, record: dict, cells: Sequence[Cell]) -> dict:
    """Record the end of this invocation and which of its cells failed; return the record."""
    keys = {c.key for c in cells}
    failed = [k for k, e in record["cells"].items() if e.get("status") == "failed" and k in keys]
    record["invocations"][-1]["finished"] = datetime.now(timezone.utc).isoformat()
    record["invocations"][-1]["failed_cells"] = failed
    atomic_write_json(out / SWEEP_FILE, record)
    return record


def cell_config(base: RunConfig, cell: Cell) -> RunConfig:
    """The sweep's protocol with the cell's method, sparsity and seed."""
    return replace(base, method=cell.method, sparsity=cell.sparsity, seed=cell.seed)


def cuda_device_count() -> int:
    """Visible CUDA devices (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class DeviceSlots:
    """The device of each of ``jobs`` concurrent cells: ``cuda`` with several visible GPUs
    spreads the slots round-robin over them; any other device (``cpu``, ``cuda:1``, ``cuda`` on
    one GPU) is shared by every slot, each cell its own process."""

    def __init__(self, device: str, jobs: int, gpu_count: int) -> None:
        device = str(device)
        if device == "cuda" and gpu_count > 1:
            self.devices = [f"cuda:{i % gpu_count}" for i in range(jobs)]
        else:
            self.devices = [device] * jobs
        self.free = list(range(jobs))

    def take(self) -> tuple[int, str]:
        """The lowest free slot and its device."""
        slot = min(self.free)
        self.free.remove(slot)
        return slot, self.devices[slot]

    def release(self, slot: int) -> None:
        """Free a slot whose cell ended."""
        self.free.append(slot)

    def describe(self) -> str:
        """One line: how many cells share which device."""
        counts = {d: self.devices.count(d) for d in dict.fromkeys(self.devices)}
        return ", ".join(f"{n} on {d}" for d, n in counts.items()) + " (one process per cell)"


def run_sweep(base: RunConfig, methods: Sequence[str], sparsities: Sequence[float],
              seeds: Sequence[int], out: str | Path, *, device: str = "cpu", jobs: int = 1,
              threads: int | None = None, progress: bool = True,
              log: Callable[[str], object] = print, env: dict | None = None,
              stack: int = 1) -> dict:
    """Run every unfinished cell of the grid (``jobs`` at a time; with ``stack`` > 1, stacks
    of that many cells trained as one computation, ``jobs`` stacks at a time); return the
    ``sweep.json``."""
    methods = canonical_methods(methods)
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if stack < 1:
        raise UsageError("--stack must be at least 1")
    out = Path(out)
    cells = plan_cells(methods, sparsities, seeds)
    env = env if env is not None else environment(device)
    if threads is None and jobs > 1:  # also on a GPU: K processes x all cores would contend
        threads = max(1, (os.cpu_count() or 1) // jobs)
    record, todo = start_sweep(out, cells, protocol_of(base), kind=TRAINING, methods=methods,
                               sparsities=sparsities, seeds=seeds, device=device, env=env,
                               extra={"recipe": resolved_recipe(base)},
                               invocation={"jobs": jobs, "threads": threads,
                                           **({"stack": stack} if stack > 1 else {})},
                               log=log)

    def finish(cell: Cell, result: dict) -> None:
        record_cell(out, record, cell, result, log)

    if stack > 1 and todo:
        units = plan_stacks([(c, cell_config(base, c), out / c.folder) for c in todo], stack,
                            by_seed=bool(base.holdout))
        slots = DeviceSlots(device, min(jobs, len(units)),
                            cuda_device_count() if str(device) == "cuda" else 0)
        run_stacks(units, slots.devices, threads, progress, log, finish)
    elif jobs == 1:
        for cell in todo:
            log(f"  run    {cell.folder}")
            cfg = cell_config(base, cell)
            finish(cell, _run_cell(cfg, out / cell.folder, device, threads, progress, log))
    elif todo:
        slots = DeviceSlots(device, min(jobs, len(todo)),
                            cuda_device_count() if str(device) == "cuda" else 0)
        log(f"  {slots.describe()}")
        _run_parallel(base, todo, out, slots, threads, log, finish)
    return close_sweep(out, record, cells)


def _run_parallel(base: RunConfig, todo: list[Cell], out: Path, slots: DeviceSlots,
                  threads: int | None, log: Callable[[str], object],
                  finish: Callable[[Cell, dict], None]) -> None:
    """One spawned process per cell, one cell per slot; a dying process only fails its cell."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # no forked CUDA / OpenMP state
    pending = list(todo)
    running: dict = {}  # sentinel -> (process, connection, cell, start, slot)
    try:
        while pending or running:
            while pending and slots.free:
                cell = pending.pop(0)
                slot, device = slots.take()
                cfg = cell_config(base, cell)
                receiver, sender = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_cell_worker, daemon=False,
                                   args=(asdict(cfg), str(out / cell.folder), device, threads,
                                         sender))
                proc.start()
                sender.close()
                running[proc.sentinel] = (proc, receiver, cell, time.perf_counter(), slot)
                log(f"  start  {cell.folder} on {device} (log: "
                    f"{out / cell.folder / 'sweep.log'})")
            for sentinel in wait(list(running) + [r[1] for r in running.values()]):
                key = sentinel if sentinel in running else next(
                    k for k, r in running.items() if r[1] is sentinel)
                proc, receiver, cell, start, slot = running.pop(key)
                slots.release(slot)
                result = None
                try:
                    if receiver.poll(None if proc.is_alive() else 0):
                        result = receiver.recv()
                except (EOFError, OSError):
                    result = None
                proc.join()
                receiver.close()
                if result is None:
                    result = {"ok": False, "seconds": time.perf_counter() - start,
                              "device": slots.devices[slot],
                              "error": f"worker process exited with code {proc.exitcode} "
                                       "without a result"}
                finish(cell, result)
                break  # the wait list changed; start the next cell first
    finally:
        for proc, receiver, *_ in running.values():
            proc.terminate()
            proc.join()
            receiver.close()


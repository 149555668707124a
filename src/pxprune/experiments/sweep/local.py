"""``pxprune sweep`` with the local launcher: every unfinished cell of the grid in this
machine's processes, ``--jobs K`` at a time (``--stack K``: stacks of cells trained as one).

Each cell is :func:`pxprune.experiments.run.run_experiment` run by
:func:`pxprune.experiments.sweep.worker.run_logged_cell`, whichever launcher started it (this
module's process pool, or a submitit job: :mod:`pxprune.experiments.sweep.submit`). So a
finished cell (``summary.json``) is skipped, an interrupted one resumes from its saved masks and
training checkpoint, and re-running the same command finishes a sweep. A cell that raises does
not stop the sweep: its error goes to ``<cell>/error.json`` and ``sweep.json``, the other cells
still run, and the command exits 1. While a cell runs it holds ``<cell>/running.json`` with a
heartbeat (:mod:`pxprune.experiments.cell_lock`): ``sweep --status`` counts it as running, and
no other launcher or invocation starts the same cell meanwhile.

``--jobs K`` runs K cells at once, each in its own (spawned) process, the cores split between
them (``--threads``, default ``cpu_count // K`` per cell, on a GPU too); on one GPU the K small
trainings share the device as K processes (each with its own CUDA context), which helps when a
single CIFAR ResNet-20 run cannot fill it; with ``--device cuda`` and several visible GPUs the K
slots go round-robin over them (:class:`DeviceSlots`). Running the K trainings as CUDA streams
inside one process was not implemented: this code was written without a GPU, so no GPU
throughput numbers for either variant exist yet (``benchmarks/gpu_session.sh`` measures them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from multiprocessing.connection import wait
from pathlib import Path

from ...errors import UsageError
from ..cell_check import TRAINING
from ..config import RunConfig
from .grid import Cell, canonical_methods, cell_config, plan_cells
from .records import environment, protocol_of, resolved_recipe
from .session import close_sweep, record_cell, start_sweep
from .stack import plan_stacks, run_stacks
from .worker import cell_worker, run_cell


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

    if todo:
        _run_todo(base, todo, out, device=device, jobs=jobs, threads=threads, stack=stack,
                  progress=progress, log=log, finish=finish)
    return close_sweep(out, record, cells)


def _run_todo(base: RunConfig, todo: list[Cell], out: Path, *, device: str, jobs: int,
              threads: int | None, stack: int, progress: bool, log: Callable[[str], object],
              finish: Callable[[Cell, dict], None]) -> None:
    """Run the cells: in stacks (``stack`` > 1), one after another here, or ``jobs`` at once."""
    def gpus() -> int:
        return cuda_device_count() if str(device) == "cuda" else 0

    if stack > 1:
        units = plan_stacks([(c, cell_config(base, c), out / c.folder) for c in todo], stack,
                            by_seed=bool(base.holdout))
        slots = DeviceSlots(device, min(jobs, len(units)), gpus())
        run_stacks(units, slots.devices, threads, progress, log, finish)
    elif jobs == 1:
        for cell in todo:
            log(f"  run    {cell.folder}")
            cfg = cell_config(base, cell)
            finish(cell, run_cell(cfg, out / cell.folder, device, threads, progress, log))
    else:
        slots = DeviceSlots(device, min(jobs, len(todo)), gpus())
        log(f"  {slots.describe()}")
        _run_parallel(base, todo, out, slots, threads, log, finish)


def _start(ctx, base: RunConfig, cell: Cell, out: Path, device: str, threads: int | None):
    """A spawned process running one cell; returns it and the end that receives its outcome."""
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=cell_worker, daemon=False,
                       args=(asdict(cell_config(base, cell)), str(out / cell.folder), device,
                             threads, sender))
    proc.start()
    sender.close()
    return proc, receiver


def _outcome(proc, receiver, start: float, device: str) -> dict:
    """What an ended (or ending) worker sent, or a failure when it died without a result."""
    result = None
    try:
        if receiver.poll(None if proc.is_alive() else 0):
            result = receiver.recv()
    except (EOFError, OSError):
        result = None
    proc.join()
    receiver.close()
    if result is None:
        result = {"ok": False, "seconds": time.perf_counter() - start, "device": device,
                  "error": f"worker process exited with code {proc.exitcode} without a result"}
    return result


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
                proc, receiver = _start(ctx, base, cell, out, device, threads)
                running[proc.sentinel] = (proc, receiver, cell, time.perf_counter(), slot)
                log(f"  start  {cell.folder} on {device} (log: "
                    f"{out / cell.folder / 'sweep.log'})")
            for sentinel in wait(list(running) + [r[1] for r in running.values()]):
                key = sentinel if sentinel in running else next(
                    k for k, r in running.items() if r[1] is sentinel)
                proc, receiver, cell, start, slot = running.pop(key)
                slots.release(slot)
                finish(cell, _outcome(proc, receiver, start, slots.devices[slot]))
                break  # the wait list changed; start the next cell first
    finally:
        for proc, receiver, *_ in running.values():
            proc.terminate()
            proc.join()
            receiver.close()

"""Several cells of a sweep as one stacked training (``pxprune sweep --stack K``).

Each cell is checked, claimed, locked (``running.json``) and pruned exactly as
:func:`pxprune.experiments.run.run_experiment` does it, each in its own folder; then the cells
still to train are trained together by :func:`pxprune.training.stacked.train_stacked` and each
summary is completed and written as a lone run's is. A cell that fails to prepare, or diverges,
fails alone (its outcome as :func:`pxprune.experiments.sweep.worker.run_guarded` gives it); the
others go on. One stack is one process (``--jobs`` stacks at once) or one submitit job.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from multiprocessing.connection import wait
from pathlib import Path

import torch

from ...devices import check_device
from ...schedule import check_seed
from ...training.recipes import get_recipe
from ...training.stacked import StackCell, train_stacked
from ..cell_lock import CellBusy, CellLock
from ..config import RunConfig
from ..folder import check_out_named, claim
from ..run import PreparedCell, finish_cell, prepare_claimed

Outcome = dict  # {"ok", "final_test_acc" | "error"/"traceback", "seconds", "device"[, "busy"]}

# ``--stack`` when not given, per device type: on a CPU one cell at a time (stacking measured no
# gain there, benchmarks/results/train_throughput_stack_cpu.json); on a GPU also one until
# benchmarks/gpu_session.sh stage 7 has measured the stacked trainer there (the stack it runs is
# the paper's row of nine methods plus dense, 10 cells)
DEFAULT_STACK = {"cpu": 1, "cuda": 1}


def default_stack(device: str) -> int:
    """Cells per stack when ``--stack`` is not given, by device type (``cuda:1`` -> cuda)."""
    return DEFAULT_STACK.get(str(device).split(":")[0], 1)


def _failure(exc: BaseException, start: float, device: str) -> Outcome:
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "device": device,
            "traceback": "".join(traceback.format_exception(exc)),
            "seconds": time.perf_counter() - start}


def _same_data(cells: Sequence[PreparedCell]) -> None:
    """Share the first cell's datasets (one copy in memory); refuse cells whose differ."""
    first = cells[0]
    for c in cells[1:]:
        for mine, theirs in ((c.train_set, first.train_set), (c.test_set, first.test_set)):
            if not (torch.equal(mine.labels, theirs.labels)
                    and torch.equal(mine.images, theirs.images)):
                raise ValueError(f"{c.out}: its data differ from {first.out}'s; cells of "
                                 "another split cannot share a stack")
        c.train_set, c.test_set = first.train_set, first.test_set


def run_stack(cfgs: Sequence[RunConfig], folders: Sequence[str | Path], *, device: str = "cpu",
              threads: int | None = None, progress: bool = False,
              log: Callable[[str], object] = print, job_id: str | None = None) -> list[Outcome]:
    """Prepare, then train as one stack, the cells ``cfgs`` in ``folders``; one outcome each."""
    if threads:
        torch.set_num_threads(threads)
    device = check_device(device)
    outcomes: list[Outcome | None] = [None] * len(cfgs)
    starts = [time.perf_counter()] * len(cfgs)
    with ExitStack() as held:
        ready: list[tuple[int, PreparedCell]] = []
        for i, (cfg, folder) in enumerate(zip(cfgs, folders, strict=True)):
            out = Path(folder)
            starts[i] = time.perf_counter()
            try:
                check_out_named(out)
                check_seed(cfg.seed)
                get_recipe(cfg.recipe, **cfg.recipe_overrides())
                claim(out, "run")
                held.enter_context(CellLock(out, job_id))
                cell = prepare_claimed(cfg, out, device, progress, log)
            except CellBusy as exc:
                outcomes[i] = {"ok": False, "busy": True, "error": str(exc), "seconds": 0.0,
                               "device": device}
                continue
            except Exception as exc:  # noqa: BLE001 - recorded in the cell's error.json
                outcomes[i] = _failure(exc, starts[i], device)
                continue
            if isinstance(cell, dict):
                outcomes[i] = {"ok": True, "final_test_acc": cell.get("final_test_acc"),
                               "seconds": time.perf_counter() - starts[i], "device": device}
            else:
                ready.append((i, cell))
        if ready:
            _train(ready, outcomes, starts, device, progress, log)
    return outcomes  # type: ignore[return-value]


def _train(ready: list[tuple[int, PreparedCell]], outcomes: list, starts: list[float],
           device: str, progress: bool, log: Callable[[str], object]) -> None:
    """Train the prepared cells together and record each one's outcome."""
    cells = [c for _, c in ready]
    start = time.perf_counter()
    try:
        _same_data(cells)
        first = cells[0]
        recipe = get_recipe(first.cfg.recipe, **first.cfg.recipe_overrides())
        results = train_stacked(
            [StackCell(c.model, c.masks, c.out, c.cfg.seed) for c in cells], first.train_set,
            first.test_set, recipe, device=device, progress=progress, log=log)
    except Exception as exc:  # noqa: BLE001 - the whole stack failed: every cell records it
        for i, _ in ready:
            outcomes[i] = _failure(exc, start, device)
        return
    for (i, cell), result in zip(ready, results, strict=True):
        if isinstance(result, Exception):
            outcomes[i] = _failure(result, starts[i], device)
            continue
        try:
            summary = finish_cell(cell, result, device)
        except Exception as exc:  # noqa: BLE001
            outcomes[i] = _failure(exc, starts[i], device)
            continue
        outcomes[i] = {"ok": True, "final_test_acc": summary.get("final_test_acc"),
                       "seconds": time.perf_counter() - starts[i], "device": device}


def stack_log(folders: Sequence[str | Path]) -> Callable[[str], None]:
    """A log writing each line to every cell's ``sweep.log`` (a stack's cells share its log)."""
    paths = [Path(f) / "sweep.log" for f in folders]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        for p in paths:
            with p.open("a") as fh:
                fh.write(msg + "\n")

    return log


def _stack_worker(cfgs: list[dict], folders: list[str], device: str, threads: int | None,
                  conn) -> None:
    """Child-process entry point: run one stack, send back its outcomes."""
    try:
        result = run_stack([RunConfig.from_dict(c) for c in cfgs], folders, device=device,
                           threads=threads, log=stack_log(folders))
    except KeyboardInterrupt:
        return
    conn.send(result)
    conn.close()


def run_stacks(units: Sequence[Sequence[tuple[object, RunConfig, Path]]], devices: Sequence[str],
               threads: int | None, progress: bool, log: Callable[[str], object],
               finish: Callable[[object, Outcome], None]) -> None:
    """Run every stack of ``units`` (each a list of (key, config, folder)): in this process
    when there is one device slot, else one spawned process per stack, ``len(devices)`` at once;
    ``finish(key, outcome)`` is called for every cell. A dying process fails only its cells.
    In this process the training log goes to ``log``; a spawned stack writes it to every one of
    its cells' ``sweep.log`` (as ``--jobs`` does for a lone cell)."""
    if len(devices) == 1:
        for unit in units:
            log(f"  stack  {len(unit)} cells: {', '.join(str(f) for _, _, f in unit)}")
            outcomes = run_stack([c for _, c, _ in unit], [f for _, _, f in unit],
                                 device=devices[0], threads=threads, progress=progress, log=log)
            for (key, _, _), outcome in zip(unit, outcomes, strict=True):
                finish(key, outcome)
        return
    _run_parallel(units, devices, threads, log, finish)


def _start_stack(ctx, unit: Sequence[tuple[object, RunConfig, Path]], device: str,
                 threads: int | None):
    """A spawned process training one stack; returns it and the end receiving its outcomes."""
    from dataclasses import asdict

    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_stack_worker, args=(
        [asdict(c) for _, c, _ in unit], [str(f) for _, _, f in unit], device, threads, sender))
    proc.start()
    sender.close()
    return proc, receiver


def _stack_outcomes(proc, receiver, unit: Sequence, start: float, device: str) -> list[Outcome]:
    """What an ended stack process sent, or a failure of each of its cells when it died."""
    outcomes = None
    try:
        if receiver.poll(None if proc.is_alive() else 0):
            outcomes = receiver.recv()
    except (EOFError, OSError):
        outcomes = None
    proc.join()
    receiver.close()
    if outcomes:
        return outcomes
    return [{"ok": False, "seconds": time.perf_counter() - start, "device": device,
             "error": f"stack process exited with code {proc.exitcode} without a result"}
            for _ in unit]


def _run_parallel(units: Sequence[Sequence[tuple[object, RunConfig, Path]]],
                  devices: Sequence[str], threads: int | None, log: Callable[[str], object],
                  finish: Callable[[object, Outcome], None]) -> None:
    """One spawned process per stack, one stack per device slot."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    pending, free = list(units), list(range(len(devices)))
    running: dict = {}  # process sentinel -> (process, receiver, unit, start, slot)
    try:
        while pending or running:
            while pending and free:
                unit, slot = pending.pop(0), free.pop(0)
                proc, receiver = _start_stack(ctx, unit, devices[slot], threads)
                running[proc.sentinel] = (proc, receiver, unit, time.perf_counter(), slot)
                log(f"  start  stack of {len(unit)} on {devices[slot]}: "
                    f"{', '.join(str(f) for _, _, f in unit)}")
            ready = wait(list(running) + [r[1] for r in running.values()])
            key = next(k for k, r in running.items() if k in ready or r[1] in ready)
            proc, receiver, unit, start, slot = running.pop(key)
            free.append(slot)
            outcomes = _stack_outcomes(proc, receiver, unit, start, devices[slot])
            for (cell_key, _, _), outcome in zip(unit, outcomes, strict=True):
                finish(cell_key, outcome)
    finally:
        for proc, receiver, *_ in running.values():
            proc.terminate()
            proc.join()
            receiver.close()


def plan_stacks(cells: Sequence[tuple[object, RunConfig, Path]], size: int,
                by_seed: bool) -> list[list[tuple[object, RunConfig, Path]]]:
    """Cells in stacks of at most ``size``, in order; ``by_seed``: a stack holds one seed's
    cells only (their data splits differ by seed when part of the training set is held out)."""
    groups: dict[object, list] = {}
    for cell in cells:
        groups.setdefault(cell[1].seed if by_seed else None, []).append(cell)
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]

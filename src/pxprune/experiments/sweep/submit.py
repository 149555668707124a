"""``pxprune sweep --launcher submitit``: a sweep's unfinished cells as submitit jobs (one Slurm
job array, one array task per cell; or local processes), each running exactly the cell a local
pool worker runs (:func:`pxprune.experiments.sweep.worker.run_logged_cell`).

The job leaves its outcome in the cell folder itself (``summary.json``, or ``error.json``), since
the submitting process is normally gone by then: ``sweep --status`` and ``pxprune report`` read
the folders. Submitting the same command again skips finished and running cells and resubmits
the others, which resume from their folders; a job stopped by Slurm (time limit, preemption) is
requeued by submitit and resumes the same way. ``wait=True`` (``--wait``) stays until every job
ended and records each outcome in ``sweep.json`` like the local launcher does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from ...errors import UsageError
from ..cell_check import TRAINING
from ..config import RunConfig
from .cells import cell_status
from .grid import Cell, canonical_methods, cell_config, plan_cells
from .records import environment, protocol_of, resolved_recipe, save_record
from .session import close_sweep, record_cell, start_sweep, write_cell_outcome
from .slurm import RequeueableCall, SlurmOptions, import_submitit, make_executor, submit
from .slurm import wait_for as wait_for_jobs
from .stack import plan_stacks, run_stack, stack_log
from .worker import run_logged_cell

JOBS_FOLDER = "submitit"  # OUT/submitit: submitit's pickles and each job's stdout / stderr


def _job_id() -> str | None:
    """This submitit job's id (``4242_7`` for an array task), None outside a job."""
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except Exception:  # noqa: BLE001 - not in a job, or no submitit: the lock just lacks it
        return None


def run_cell_job(cfg: dict, out: str, cell: dict, device: str, threads: int | None) -> dict:
    """The body of one job: run the cell as a local worker would and leave the outcome in its
    folder (``error.json`` on failure); the result also goes back to a waiting submitter."""
    the_cell = Cell(**cell)
    result = run_logged_cell(cfg, Path(out) / the_cell.folder, device, threads, _job_id())
    if not result.get("busy"):
        write_cell_outcome(Path(out), the_cell, result)
    return result


def run_stack_job(cfgs: list[dict], out: str, cells: list[dict], device: str,
                  threads: int | None) -> list[dict]:
    """The body of one ``--stack`` job: the cells trained as one stack
    (:func:`pxprune.experiments.sweep.stack.run_stack`), each outcome left in its folder."""
    the_cells = [Cell(**c) for c in cells]
    folders = [Path(out) / c.folder for c in the_cells]
    results = run_stack([RunConfig.from_dict(c) for c in cfgs], folders, device=device,
                        threads=threads, log=stack_log(folders), job_id=_job_id())
    for cell, result in zip(the_cells, results, strict=True):
        if not result.get("busy"):
            write_cell_outcome(Path(out), cell, result)
    return results


def _ended_without_result(out: Path, cell: Cell, why: str) -> dict:
    """The outcome of a job that returned nothing (killed, cancelled): done if its folder says
    so, else a failure, which the submitter writes to the folder since the job could not."""
    if cell_status(out, cell) == "done":
        summary = json.loads((out / cell.folder / "summary.json").read_text())
        return {"ok": True, "final_test_acc": summary.get("final_test_acc"), "seconds": 0.0}
    return {"ok": False, "error": why, "seconds": 0.0}


def submit_sweep(base: RunConfig, methods: Sequence[str], sparsities: Sequence[float],
                 seeds: Sequence[int], out: str | Path, *, device: str, cluster: str,
                 slurm: SlurmOptions, threads: int | None = None, wait: bool = False,
                 poll_s: float | None = None, log: Callable[[str], object] = print,
                 env: dict | None = None, stack: int = 1) -> dict:
    """Submit every unfinished, not running cell as a job (``stack`` > 1: every stack of that
    many cells); with ``wait``, record each outcome as its job ends. Returns the
    ``sweep.json`` record."""
    import_submitit()  # before writing anything: a missing dependency is one line
    methods = canonical_methods(methods)
    slurm.check(device, cluster)
    out = Path(out)
    cells = plan_cells(methods, sparsities, seeds)
    env = env if env is not None else environment(device)
    if threads is None:
        threads = slurm.cpus_per_task
    # before sweep.json is touched: no Slurm here, or options submitit refuses, are one line
    executor = make_executor(out / JOBS_FOLDER, cluster, slurm, device, f"pxprune-{out.name}")
    record, todo = start_sweep(
        out, cells, protocol_of(base), kind=TRAINING, methods=methods, sparsities=sparsities,
        seeds=seeds, device=device, env=env, extra={"recipe": resolved_recipe(base)},
        invocation={"launcher": "submitit", "cluster": cluster, "threads": threads,
                    "wait": wait, "slurm": {**asdict(slurm)},
                    **({"stack": stack} if stack > 1 else {})}, log=log)
    if not todo:
        return close_sweep(out, record, cells)
    job_cells, calls = _job_calls(base, todo, out, device, threads, stack)
    try:
        jobs = submit(executor, calls)
    except Exception as exc:  # sbatch refused (bad partition, account...): one line
        if isinstance(exc, UsageError):
            raise
        raise UsageError("submission failed: " + " ".join(str(exc).split())[:400]) from None
    for group, job in zip(job_cells, jobs, strict=True):
        for cell in group:
            record["cells"][cell.key].update(status="submitted", job_id=str(job.job_id))
    record["invocations"][-1]["job_ids"] = [str(j.job_id) for j in jobs]
    save_record(out, record)
    log(f"submitted {len(jobs)} job(s) ({cluster}: {jobs[0].job_id} ...); logs in "
        f"{out / JOBS_FOLDER}; progress: pxprune sweep --status {out}")
    if wait:
        if poll_s is None:  # local processes are cheap to poll; Slurm's accounting is not
            poll_s = 2.0 if cluster == "local" else 30.0
        _record_as_jobs_end(out, record, jobs, job_cells, poll_s, stack > 1, log)
    return close_sweep(out, record, cells)


def _job_calls(base: RunConfig, todo: list[Cell], out: Path, device: str, threads: int | None,
               stack: int) -> tuple[list[list[Cell]], list[RequeueableCall]]:
    """Each job's cells and its call: one job a cell, or (``stack`` > 1) one job a stack."""
    if stack > 1:
        units = plan_stacks([(c, cell_config(base, c), out / c.folder) for c in todo], stack,
                            by_seed=bool(base.holdout))
        return ([[c for c, _, _ in unit] for unit in units],
                [RequeueableCall(run_stack_job, [asdict(cfg) for _, cfg, _ in unit],
                                 str(out.resolve()), [asdict(c) for c, _, _ in unit], device,
                                 threads) for unit in units])
    return ([[cell] for cell in todo],
            [RequeueableCall(run_cell_job, asdict(cell_config(base, cell)), str(out.resolve()),
                             asdict(cell), device, threads) for cell in todo])


def _record_as_jobs_end(out: Path, record: dict, jobs: list, job_cells: list[list[Cell]],
                        poll_s: float, stacked: bool, log: Callable[[str], object]) -> None:
    """Record every cell's outcome in ``sweep.json`` as its job ends (``--wait``)."""
    for i, result, why in wait_for_jobs(jobs, poll_s):
        results = result if stacked and result is not None else [result]
        for n, cell in enumerate(job_cells[i]):
            if result is None:
                record_cell(out, record, cell, _ended_without_result(out, cell, why), log)
            else:  # the job already left its outcome in the folder
                record_cell(out, record, cell, results[n], log, write_folder=False)

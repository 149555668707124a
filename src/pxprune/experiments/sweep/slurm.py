"""submitit glue for ``pxprune sweep --launcher submitit``: Slurm options from the command line,
the executor, a job body Slurm may stop and submitit requeues, and waiting for the jobs.

Nothing here knows what a cell is: :mod:`pxprune.experiments.sweep.submit` hands in the function
each job runs. submitit is an optional dependency (``pip install pxprune[cluster]``), imported
only here.

Options (every one optional except ``--slurm-time`` on a real cluster):

- ``--slurm-partition P``, ``--slurm-gpus-per-job N`` (0 or 1: a cell trains on one device; one
  training over several GPUs is ``torchrun ... pxprune run``), ``--slurm-cpus-per-task N`` (also
  the cell's torch threads unless ``--threads``), ``--slurm-mem 32G`` (K/M/G/T, GB without a unit)
  and ``--slurm-time`` in any Slurm form (``90``, ``12:00:00``, ``2-00:00:00``).
- Any other ``--slurm-KEY=VALUE`` (or ``--slurm-KEY`` for a flag such as ``exclusive``) is passed
  through: a key submitit's SlurmExecutor knows (``account``, ``qos``, ``constraint``,
  ``array_parallelism``, ...) as that parameter, any other as an ``#SBATCH --KEY=VALUE`` line. Keys
  are identifiers (``-`` read as ``_``); values are single-line strings, shell-quoted by submitit.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UsageError

INSTALL_HINT = ("--launcher submitit needs the submitit package: "
                "pip install 'pxprune[cluster]'")
CLUSTERS = ("slurm", "local")  # local: the same jobs as processes on this machine (no Slurm)
EXTRA_PREFIX = "--slurm-"
# Keys with their own option, and keys submitit itself sets (logs, array, signal, the command):
OWN_OPTIONS = {"partition": "--slurm-partition", "time": "--slurm-time",
               "mem": "--slurm-mem", "cpus_per_task": "--slurm-cpus-per-task",
               "gpus_per_node": "--slurm-gpus-per-job", "gpus": "--slurm-gpus-per-job",
               "gpus_per_task": "--slurm-gpus-per-job", "num_gpus": "--slurm-gpus-per-job",
               "gres": "--slurm-gpus-per-job"}
RESERVED = {"output", "error", "array", "signal", "open_mode", "job_name", "name", "command",
            "folder", "map_count", "setup", "teardown", "srun_args", "additional_parameters",
            "wrap", "nodes", "ntasks", "ntasks_per_node", "tasks_per_node"}  # a cell is 1 task
_KEY = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", re.IGNORECASE)
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 min) would end a cell early


def import_submitit():
    """The submitit module, or a one-line UsageError saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return submitit


def parse_slurm_time(text: str) -> int:
    """Minutes (rounded up) from a Slurm time: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``,
    ``D-H:M:S``."""
    m = _TIME.match(text.strip())
    if not m:
        raise UsageError(f"--slurm-time {text!r} is not a Slurm time (e.g. 90, 12:00:00, "
                         "2-00:00:00)")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is None:
        parts = [x for x in (a, b, c) if x is not None]
        if len(parts) == 1:
            seconds = 60 * parts[0]
        elif len(parts) == 2:
            seconds = 60 * parts[0] + parts[1]
        else:
            seconds = 3600 * parts[0] + 60 * parts[1] + parts[2]
    else:
        seconds = 86400 * days + 3600 * a + 60 * (b or 0) + (c or 0)
    if seconds <= 0:
        raise UsageError(f"--slurm-time {text!r} must be positive")
    return math.ceil(seconds / 60)


def parse_mem_gb(text: str) -> float:
    """Gigabytes from ``32G``, ``32GB``, ``500M``, ``1T`` or a bare number (GB)."""
    m = _MEM.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--slurm-mem {text!r} is not a memory size (e.g. 32G, 500M)")
    scale = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1.0}
    return float(m.group(1)) * scale[m.group(2).upper()]


def _slurm_defaults(submitit) -> dict:
    """submitit's SlurmExecutor parameters and their defaults (types for the extra values)."""
    try:
        from submitit.slurm.slurm import _get_default_parameters

        return dict(_get_default_parameters())
    except (ImportError, AttributeError):  # another submitit layout: pass extras to sbatch
        return {}


def _typed(key: str, value: str | bool, default) -> object:
    if isinstance(value, bool) or isinstance(default, str) or default is None:
        return value
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise UsageError(f"--slurm-{key.replace('_', '-')} takes true or false, not {value!r}")
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"--slurm-{key.replace('_', '-')} takes an integer, "
                             f"not {value!r}") from None
    return value


def parse_extra(tokens: Sequence[str]) -> dict[str, str | bool]:
    """``{"account": "abc", "exclusive": True}`` from ``--slurm-account=abc --slurm-exclusive``;
    keys are checked (identifier, not an option of its own, not one submitit sets)."""
    extra: dict[str, str | bool] = {}
    for token in tokens:
        if not token.startswith(EXTRA_PREFIX):
            raise UsageError(f"unrecognized argument {token!r}")
        name, eq, value = token[len(EXTRA_PREFIX):].partition("=")
        if not _KEY.match(name):
            raise UsageError(f"{EXTRA_PREFIX}{name}: a Slurm parameter is lower-case letters, "
                             "digits, '-' and '_' (e.g. --slurm-account=abc)")
        key = name.replace("-", "_")
        if key in OWN_OPTIONS:
            raise UsageError(f"{token.split('=')[0]}: use {OWN_OPTIONS[key]}")
        if key in RESERVED:
            raise UsageError(f"{EXTRA_PREFIX}{name} is set by pxprune/submitit (logs, job "
                             "array, one task per cell) and cannot be passed through")
        if eq and ("\n" in value or "\r" in value or not value):
            raise UsageError(f"{EXTRA_PREFIX}{name} needs a one-line, non-empty value")
        if key in extra:
            raise UsageError(f"{EXTRA_PREFIX}{name} given twice")
        extra[key] = value if eq else True
    return extra


@dataclass(frozen=True)
class SlurmOptions:
    """What the ``--slurm-*`` options ask for (None: not given)."""

    partition: str | None = None
    gpus_per_job: int | None = None
    time_min: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    extra: dict = field(default_factory=dict)

    def check(self, device: str, cluster: str) -> None:
        """Refuse what a one-device cell cannot use or a real cluster would cut short."""
        if self.gpus_per_job is not None and self.gpus_per_job not in (0, 1):
            raise UsageError("--slurm-gpus-per-job: a cell trains on one GPU (several cells "
                             "run as separate jobs); to spread one training over several GPUs "
                             "use torchrun with pxprune run")
        if self.gpus_per_job == 1 and not str(device).startswith("cuda"):
            raise UsageError(f"--slurm-gpus-per-job 1 with --device {device}: pass --device "
                             "cuda (the default device is the submitting machine's)")
        for name in ("cpus_per_task", "time_min"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"--slurm-{name.replace('_', '-')} must be at least 1")
        if cluster == "slurm" and self.time_min is None:
            raise UsageError("--launcher submitit needs --slurm-time (e.g. 12:00:00): without "
                             "it submitit asks Slurm for 5 minutes per cell")

    def gpus(self, device: str) -> int:
        """GPUs per job: as given, else 1 for a CUDA sweep and 0 on CPU."""
        if self.gpus_per_job is not None:
            return self.gpus_per_job
        return 1 if str(device).startswith("cuda") else 0


def executor_parameters(opts: SlurmOptions, device: str, cluster: str, name: str,
                        known: dict | None = None) -> dict:
    """Keyword arguments for ``AutoExecutor.update_parameters`` (generic ones and ``slurm_*``);
    ``known``: submitit's Slurm parameters with their defaults (extras of other keys go to
    ``slurm_additional_parameters``, i.e. straight into the sbatch file)."""
    params: dict = {"name": name, "tasks_per_node": 1, "nodes": 1,
                    "timeout_min": opts.time_min or (LOCAL_TIMEOUT_MIN if cluster == "local"
                                                     else None)}
    gpus = opts.gpus(device)
    if gpus:
        params["gpus_per_node"] = gpus
    if opts.cpus_per_task is not None:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.mem_gb is not None:
        params["mem_gb"] = opts.mem_gb
    if opts.partition is not None:
        params["slurm_partition"] = opts.partition
    known = known or {}
    additional = {}
    for key, value in opts.extra.items():
        if key in known:
            params[f"slurm_{key}"] = _typed(key, value, known[key])
        else:
            additional[key] = value
    if additional:
        params["slurm_additional_parameters"] = additional
    return {k: v for k, v in params.items() if v is not None}


def make_executor(folder: str | Path, cluster: str, opts: SlurmOptions, device: str,
                  name: str):
    """A submitit AutoExecutor for ``cluster`` (slurm or local) with the options applied; the
    jobs' pickles and logs go to ``folder``."""
    submitit = import_submitit()
    if cluster not in CLUSTERS:
        raise UsageError(f"--submitit-cluster must be one of {', '.join(CLUSTERS)}")
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except RuntimeError as exc:  # SlurmExecutor: "Could not detect srun"
        raise UsageError(f"no Slurm on this machine ({exc}); run the submission on the "
                         "cluster's login node, or try the jobs here with "
                         "--submitit-cluster local") from None
    params = executor_parameters(opts, device, cluster, name, _slurm_defaults(submitit))
    try:
        executor.update_parameters(**params)
    except (ValueError, NameError, AssertionError) as exc:
        raise UsageError("submitit refused the Slurm options: "
                         + " ".join(str(exc).split())[:300]) from None
    return executor


class RequeueableCall:
    """A job body ``fn(*args)`` that submitit requeues when Slurm stops it (time limit,
    preemption): the work must resume from its own files, as a sweep cell does."""

    def __init__(self, fn: Callable[..., dict], *args) -> None:
        self.fn = fn
        self.args = args

    def __call__(self) -> dict:
        return self.fn(*self.args)

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on the stop signal: run the same call again."""
        submitit = import_submitit()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def submit(executor, calls: Sequence[RequeueableCall]) -> list:
    """Submit every call as one job array (one array task per call); their submitit jobs."""
    jobs = []
    with executor.batch():
        for call in calls:
            jobs.append(executor.submit(call))
    return jobs


def job_outcome(job) -> tuple[dict | None, str]:
    """The job's returned value, or None and why it ended without one (killed, cancelled,
    requeued too often, or the body raised)."""
    try:
        return job.result(), ""
    except Exception as exc:  # noqa: BLE001 - submitit's UncompletedJobError, FailedJobError
        state = getattr(job, "state", "UNKNOWN")
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return None, f"job {job.job_id} ended without a result (state {state}): {first[:200]}"


def wait_for(jobs: Sequence, poll_s: float = 30.0) -> Iterator[tuple[int, dict | None, str]]:
    """``(index, result or None, why)`` for each job as it ends, in the order they end; polls
    every 0.25 s at first, backing off to ``poll_s`` (Slurm's accounting is asked at most that
    often by submitit's watcher anyway)."""
    pending = dict(enumerate(jobs))
    delay = 0.25
    while pending:
        ended = [i for i, job in pending.items() if job.done()]
        for i in ended:
            result, why = job_outcome(pending.pop(i))
            yield i, result, why
        if pending and not ended:
            time.sleep(delay)
            delay = min(2 * delay, poll_s)

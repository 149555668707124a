"""Tests of sweep launchers: submitit jobs run the same cells as the local pool (results, resume
after a killed job, failures), the sbatch file a command line produces, --status, the cell lock,
the device slots of --jobs, and the one-line message without submitit."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

import pxprune.experiments.cell_lock as cell_lock
from pxprune.cli.main import main
from pxprune.experiments.config import RunConfig
from pxprune.experiments.resolve import UsageError
from pxprune.experiments.sweep.grid import plan_cells
from pxprune.experiments.sweep.local import DeviceSlots, run_sweep
from pxprune.experiments.sweep.slurm import (
    SlurmOptions,
    parse_extra,
    parse_mem_gb,
    parse_slurm_time,
)
from pxprune.experiments.sweep.status import sweep_status
from pxprune.masks import Masks

pytest.importorskip("submitit")

CELLS = ["random/s50.00/seed0", "random/s90.00/seed0", "magnitude/s50.00/seed0",
         "magnitude/s90.00/seed0"]
KILLED, FAILING = "random/s90.00/seed0", "magnitude/s50.00/seed0"

# Fault injection inside the submitit job processes only (their controller lacks the variable):
# a cell that raises, a cell whose process SIGKILLs itself right after epoch 1 was saved, and a
# slow cell (1 s per epoch) for a time limit to stop.
FAULT_HOOK = '''
import os
if os.environ.get("SUBMITIT_LOCAL_GLOBALID") is not None and os.environ.get("PXPRUNE_FAULTS"):
    import signal
    import pxprune.experiments.run as run  # the cell's run binds train here
    import pxprune.experiments.sweep.worker as worker
    faults = dict(i.split("=", 1)[::-1] for i in os.environ["PXPRUNE_FAULTS"].split(";"))
    real_run, real_train = worker.run_experiment, run.train

    def killing_train(*a, **k):
        def after_epoch(record):
            if record["epoch"] == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_train(*a, **k, callback=after_epoch)

    def slow_train(*a, **k):
        import time
        return real_train(*a, **k, callback=lambda record: time.sleep(1.0))

    def run_experiment(cfg, folder, **kw):
        fault = next((f for cell, f in faults.items() if str(folder).endswith(cell)), None)
        if fault == "raise":
            raise RuntimeError("boom")
        if fault == "kill":
            run.train = killing_train
        if fault == "slow":
            run.train = slow_train
        return real_run(cfg, folder, **kw)

    worker.run_experiment = run_experiment
'''


def args_for(data, out, *extra: str, device: str = "cpu", threads: str | None = "1",
             methods: str = "random,magnitude", sparsities: str = "50%,0.9",
             epochs: int = 2) -> list[str]:
    """By default a 2 methods x 2 sparsities x 1 seed sweep of a toy ResNet-20 on 8x8 images,
    2 epochs (a job can then be killed after its first)."""
    return ["sweep", "--model", "resnet20", "--dataset", str(data), "--holdout", "0.25",
            "--methods", methods, "--sparsities", sparsities, "--seeds", "0", "--recipe",
            "cpu_small", "--epochs", str(epochs), "--batch-size", "16", "--per-class", "2",
            "--device", device, "--no-progress", "--out", str(out),
            *(["--threads", threads] if threads else []), *extra]


SUBMITIT_LOCAL = ("--launcher", "submitit", "--submitit-cluster", "local", "--wait")


def outcome(folder) -> dict:
    """What a cell computed: accuracy, every epoch's losses and accuracies, the masks."""
    summary = json.loads((folder / "summary.json").read_text())
    epochs = [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_s")}
              for line in (folder / "metrics.jsonl").read_text().splitlines()]
    masks = Masks.load(folder / "masks.safetensors")
    return {"acc": summary["final_test_acc"], "epochs": epochs,
            "masks": {k: masks[k].tolist() for k in masks}}


@pytest.fixture(scope="module")
def data(tiny_pt):
    return tiny_pt


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, data):
    """The reference: the same sweep through the local launcher (in this process, 1 thread)."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    threads = torch.get_num_threads()
    try:
        assert main(args_for(data, out)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def faulty_submission(tmp_path_factory, data):
    """The sweep as local submitit jobs, one cell raising and one job killed after epoch 1;
    returns the folder, the exit code and what --status printed right after."""
    out = tmp_path_factory.mktemp("submitit") / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        fault_env(mp, tmp_path_factory.mktemp("hooks"), f"kill={KILLED};raise={FAILING}")
        code = main(args_for(data, out, *SUBMITIT_LOCAL))
    saved = {f: (out / f / "masks.safetensors").read_bytes() for f in (KILLED,)}
    first_epoch = (out / KILLED / "metrics.jsonl").read_text()
    status = sweep_status(out)
    return {"out": out, "code": code, "status": status, "saved_masks": saved,
            "first_epoch": first_epoch}


@pytest.fixture(scope="module")
def resubmitted(faulty_submission, data):
    """The same command submitted again, without faults."""
    out = faulty_submission["out"]
    code = main(args_for(data, out, *SUBMITIT_LOCAL))
    return {"out": out, "code": code}


def test_one_submitit_job_equals_the_local_launcher(data, tmp_path):
    """The default suite's check of the submitit path (one job, about 10 s): same cell."""
    local, jobs = tmp_path / "local", tmp_path / "jobs"
    threads = torch.get_num_threads()
    try:
        assert main(args_for(data, local, methods="random", sparsities="0.9", epochs=1)) == 0
    finally:
        torch.set_num_threads(threads)
    assert main(args_for(data, jobs, *SUBMITIT_LOCAL, methods="random", sparsities="0.9",
                         epochs=1)) == 0
    assert outcome(jobs / KILLED) == outcome(local / KILLED)
    record = json.loads((jobs / "sweep.json").read_text())
    assert record["cells"][KILLED]["status"] == "done" and record["cells"][KILLED]["job_id"]
    assert (jobs / KILLED / "sweep.log").exists() and not (jobs / KILLED / cell_lock.FILE).exists()


# The full scenario (4 jobs, then 2 resubmitted: about 45 s on 2 busy cores) is in -m slow.
@pytest.mark.slow
def test_failing_cell_is_recorded_and_the_others_finish(faulty_submission):
    out = faulty_submission["out"]
    assert faulty_submission["code"] == 1
    error = json.loads((out / FAILING / "error.json").read_text())  # written by the job itself
    assert error["error"] == "RuntimeError: boom" and "Traceback" in error["traceback"]
    record = json.loads((out / "sweep.json").read_text())
    assert record["cells"][FAILING]["status"] == "failed"
    for folder in ("random/s50.00/seed0", "magnitude/s90.00/seed0"):
        assert (out / folder / "summary.json").exists()
        assert record["cells"][folder]["status"] == "done"
        assert not (out / folder / cell_lock.FILE).exists()  # released when the cell ended
    invocation = record["invocations"][-1]
    assert invocation["launcher"] == "submitit" and invocation["cluster"] == "local"
    assert sorted(invocation["failed_cells"]) == sorted([KILLED, FAILING])
    assert len(invocation["job_ids"]) == 4
    assert {record["cells"][f]["job_id"] for f in CELLS} == set(invocation["job_ids"])


@pytest.mark.slow
def test_killed_job_leaves_a_resumable_cell(faulty_submission):
    out = faulty_submission["out"]
    cell = out / KILLED
    assert (cell / "checkpoint.pt").exists() and not (cell / "summary.json").exists()
    assert len(faulty_submission["first_epoch"].splitlines()) == 1
    error = json.loads((cell / "error.json").read_text())  # the submitter noticed the death
    assert "ended without a result" in error["error"]
    assert (cell / cell_lock.FILE).exists()  # SIGKILL left the lock; its pid is gone
    assert cell_lock.live_holder(cell) is None
    status = faulty_submission["status"]
    assert status["counts"] == {"done": 2, "running": 0, "failed": 2, "pending": 0}


@pytest.mark.slow
def test_resubmission_resumes_and_matches_the_local_launcher(resubmitted, local_run,
                                                             faulty_submission):
    out = resubmitted["out"]
    assert resubmitted["code"] == 0
    record = json.loads((out / "sweep.json").read_text())
    assert len(record["invocations"][-1]["job_ids"]) == 2  # finished cells were not resubmitted
    assert all(record["cells"][f]["status"] == "done" for f in CELLS)
    assert not any((out / f / "error.json").exists() for f in (FAILING, KILLED))
    # the killed cell continued after its saved epoch with its saved masks (not re-pruned)
    lines = (out / KILLED / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] + "\n" == faulty_submission["first_epoch"]
    assert (out / KILLED / "masks.safetensors").read_bytes() == \
        faulty_submission["saved_masks"][KILLED]
    # every cell, killed and resumed or not, equals the local launcher's cell
    for folder in CELLS:
        assert outcome(out / folder) == outcome(local_run / folder), folder
    assert sweep_status(out)["counts"] == {"done": 4, "running": 0, "failed": 0, "pending": 0}


def fault_env(mp: pytest.MonkeyPatch, hooks, faults: str) -> None:
    """Let submitit's local job processes import the fault hook (and only the listed cells)."""
    (hooks / "sitecustomize.py").write_text(FAULT_HOOK)
    mp.setenv("PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]))
    mp.setenv("PXPRUNE_FAULTS", faults)


@pytest.mark.slow
def test_time_limit_requeues_the_job_and_the_cell_resumes(data, tmp_path, monkeypatch):
    """A job reaching its time limit gets submitit's signal, is requeued (RequeueableCall)
    and continues its cell after the last saved epoch (about 30 s)."""
    import submitit

    from pxprune.experiments.sweep.grid import Cell
    from pxprune.experiments.sweep.slurm import RequeueableCall
    from pxprune.experiments.sweep.submit import run_cell_job

    fault_env(monkeypatch, tmp_path, "slow=random/s90.00/seed0")
    out = tmp_path / "sweep"
    cell = Cell("random", 0.9, 0)
    cfg = RunConfig(model="resnet20", dataset=str(data), holdout=0.25, method="random",
                    sparsity=0.9, per_class=2, recipe="cpu_small", epochs=6, batch_size=16)
    executor = submitit.LocalExecutor(tmp_path / "jobs")
    executor.update_parameters(timeout_min=0.25, signal_delay_s=5)  # signal after 10 s
    job = executor.submit(RequeueableCall(run_cell_job, dataclasses.asdict(cfg), str(out),
                                          dataclasses.asdict(cell), "cpu", 1))
    result = job.result()
    assert result["ok"] and result["final_test_acc"] is not None
    log = (out / cell.folder / "sweep.log").read_text()
    assert "resuming after epoch" in log
    epochs = [json.loads(line)["epoch"] for line in
              (out / cell.folder / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 7))
    job_logs = "".join(p.read_text() for p in (tmp_path / "jobs").glob("*_log.*"))
    assert "Requeued job" in job_logs


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$SBATCH_CAPTURE"
echo "Submitted batch job 4242"
"""


def test_slurm_parameters_written_to_the_sbatch_file(data, tmp_path, monkeypatch, capsys):
    """A fake sbatch (and srun, so that submitit sees a Slurm cluster) captures the file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    capture = tmp_path / "captured.sh"
    monkeypatch.setenv("SBATCH_CAPTURE", str(capture))
    out = tmp_path / "r20"
    args = args_for(data, out, "--launcher", "submitit", "--slurm-partition", "gpu",
                    "--slurm-gpus-per-job", "1", "--slurm-time", "2-00:00:00",
                    "--slurm-cpus-per-task", "8", "--slurm-mem", "32G", "--slurm-account=abc",
                    "--slurm-qos", "high", "--slurm-exclusive", "--slurm-array-parallelism=2",
                    "--slurm-reservation=spring school", device="cuda", threads=None)
    assert main(args) == 0
    lines = capture.read_text().splitlines()
    sbatch = sorted(line for line in lines if line.startswith("#SBATCH"))
    assert sbatch[:13] == [
        "#SBATCH --account=abc", "#SBATCH --array=0-3%2", "#SBATCH --cpus-per-task=8",
        f"#SBATCH --error={out}/submitit/%A_%a_0_log.err", "#SBATCH --exclusive",
        "#SBATCH --gpus-per-node=1", "#SBATCH --job-name=pxprune-r20", "#SBATCH --mem=32GB",
        "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --open-mode=append",
        f"#SBATCH --output={out}/submitit/%A_%a_0_log.out", "#SBATCH --partition=gpu"]
    assert sbatch[13:] == ["#SBATCH --qos=high", "#SBATCH --reservation='spring school'",
                           "#SBATCH --signal=USR2@90", "#SBATCH --time=2880",
                           "#SBATCH --wckey=submitit"]
    srun = next(line for line in lines if line.startswith("srun"))
    assert srun.endswith(f"-u -m submitit.core._submit {out}/submitit")
    record = json.loads((out / "sweep.json").read_text())
    assert [record["cells"][f]["job_id"] for f in CELLS] == [f"4242_{i}" for i in range(4)]
    assert record["cells"][CELLS[0]]["status"] == "submitted"
    assert record["invocations"][-1]["slurm"]["cpus_per_task"] == 8
    assert not any((out / f).exists() for f in CELLS)  # nothing ran here
    capsys.readouterr()
    assert main(["sweep", "--status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "done 0, running 0, failed 0, pending 4 (0 interrupted)" in text


@pytest.mark.parametrize("extra, message", [
    ("--slurm-Account=abc", "lower-case letters"),
    ("--slurm-out;put=x", "lower-case letters"),
    ("--slurm-output=x.log", "cannot be passed through"),
    ("--slurm-ntasks=4", "cannot be passed through"),
    ("--slurm-gpus=2", "use --slurm-gpus-per-job"),
    ("--slurm-account=", "one-line, non-empty value"),
    ("--slurm-account=a\nb", "one-line, non-empty value"),
])
def test_extra_slurm_options_are_checked(extra, message):
    with pytest.raises(UsageError, match=message):
        parse_extra([extra])


def test_extra_slurm_options_parse_and_type():
    assert parse_extra(["--slurm-account=abc", "--slurm-exclusive", "--slurm-mail-type=END"]) == \
        {"account": "abc", "exclusive": True, "mail_type": "END"}
    import submitit

    from pxprune.experiments.sweep.slurm import _slurm_defaults, executor_parameters

    params = executor_parameters(
        SlurmOptions(time_min=90, extra={"array_parallelism": "4", "qos": "high",
                                         "reservation": "r1"}),
        "cpu", "slurm", "x", _slurm_defaults(submitit))
    assert params["slurm_array_parallelism"] == 4 and params["slurm_qos"] == "high"
    assert params["slurm_additional_parameters"] == {"reservation": "r1"}
    assert params["timeout_min"] == 90 and "gpus_per_node" not in params
    with pytest.raises(UsageError, match="takes an integer"):
        executor_parameters(SlurmOptions(extra={"array_parallelism": "many"}), "cpu", "slurm",
                            "x", _slurm_defaults(submitit))


def test_slurm_time_and_memory_units():
    assert [parse_slurm_time(t) for t in ("90", "1:30", "12:00:00", "2-00:00:00", "1-12",
                                          "0-0:0:1")] == [90, 2, 720, 2880, 2160, 1]
    assert [parse_mem_gb(m) for m in ("32G", "32GB", "500M", "1T", "16")] == \
        [32.0, 32.0, 500 / 1024, 1024.0, 16.0]
    for bad in ("12h", "-5", "0"):
        with pytest.raises(UsageError):
            parse_slurm_time(bad)
    with pytest.raises(UsageError):
        parse_mem_gb("lots")


def test_cli_refuses_mismatched_launcher_options(data, tmp_path, capsys):
    out = tmp_path / "x"
    cases = [
        (args_for(data, out, "--slurm-partition", "gpu"), "applies only with --launcher submitit"),
        (args_for(data, out, "--slurm-account=abc"), "applies only with --launcher submitit"),
        (args_for(data, out, "--launcher", "submitit", "--jobs", "2"), "--jobs applies to"),
        (args_for(data, out, "--launcher", "submitit", "--slurm-gpus-per-job", "2",
                  "--submitit-cluster", "local"), "torchrun"),
        (args_for(data, out, "--launcher", "submitit", "--slurm-gpus-per-job", "1",
                  "--submitit-cluster", "local"), "pass --device cuda"),
        (args_for(data, out, "--launcher", "submitit", "--submitit-cluster", "local",
                  "--slurm-time", "soon"), "not a Slurm time"),
    ]
    cases += [(["sweep", "--status", str(tmp_path / "nothing")], "no sweep in"),
              (["sweep", "--methods", "random"], "sweep needs --out DIR (or --status DIR)")]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_no_slurm_here_is_one_line_and_writes_nothing(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no srun on the PATH
    out = tmp_path / "r20"
    assert main(args_for(data, out, "--launcher", "submitit", "--slurm-time", "60",
                         "--slurm-account", "abc")) == 2
    err = capsys.readouterr().err.strip()
    assert "no Slurm on this machine" in err and "--submitit-cluster local" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_slurm_without_time_limit_is_refused():
    with pytest.raises(UsageError, match="needs --slurm-time"):
        SlurmOptions().check("cuda", "slurm")
    SlurmOptions().check("cuda", "local")  # local jobs get a week


def test_missing_submitit_is_one_line(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    out = tmp_path / "no_submitit"
    assert main(args_for(data, out, "--launcher", "submitit", "--slurm-time", "60")) == 2
    err = capsys.readouterr().err
    assert err == ("pxprune sweep: error: --launcher submitit needs the submitit package: "
                   "pip install 'pxprune[cluster]'\n")
    assert not out.exists()


def test_device_slots_share_one_gpu_and_spread_over_several():
    one = DeviceSlots("cuda", 3, gpu_count=1)
    assert [one.take() for _ in range(3)] == [(0, "cuda"), (1, "cuda"), (2, "cuda")]
    assert "3 on cuda" in one.describe()
    two = DeviceSlots("cuda", 4, gpu_count=2)
    assert [two.take()[1] for _ in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    two.release(1)
    assert two.take() == (1, "cuda:1")  # the freed slot's GPU gets the next cell
    assert DeviceSlots("cuda:1", 2, gpu_count=4).devices == ["cuda:1", "cuda:1"]
    assert DeviceSlots("cpu", 2, gpu_count=0).devices == ["cpu", "cpu"]


def test_cell_lock_heartbeat_busy_and_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(cell_lock, "HEARTBEAT_S", 0.05)
    folder = tmp_path / "cell"
    with cell_lock.CellLock(folder, job_id="77_3"):
        path = folder / cell_lock.FILE
        os.utime(path, (time.time() - 100, time.time() - 100))
        time.sleep(0.3)
        holder = cell_lock.live_holder(folder)
        assert holder["job_id"] == "77_3" and holder["pid"] == os.getpid()
        assert holder["age_s"] < 5  # the heartbeat refreshed it
        with cell_lock.CellLock(folder):  # its holder enters again (a cell runs its run)
            assert json.loads(path.read_text())["job_id"] == "77_3"
        assert path.exists()  # ... and leaving the inner entry keeps the lock
        refused: list[Exception] = []

        def second_writer() -> None:
            try:
                with cell_lock.CellLock(folder):
                    pass
            except cell_lock.CellBusy as exc:
                refused.append(exc)

        other = threading.Thread(target=second_writer)
        other.start()
        other.join()
        assert len(refused) == 1 and "job 77_3" in str(refused[0])
    assert not path.exists()
    # a lock from another host is live while its heartbeat is fresh, stale after STALE_S
    path.write_text(json.dumps({"host": "node17", "pid": 1, "job_id": "9"}))
    assert cell_lock.live_holder(folder)["host"] == "node17"
    old = time.time() - cell_lock.STALE_S - 1
    os.utime(path, (old, old))
    assert cell_lock.live_holder(folder) is None
    # a lock from this host whose process is gone is stale at once, and is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    lock = json.loads(path.read_text()) | {"host": cell_lock.socket.gethostname(),
                                          "pid": int(dead.stdout)}
    path.write_text(json.dumps(lock))
    assert cell_lock.live_holder(folder) is None
    with cell_lock.CellLock(folder):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_status_and_local_launcher_skip_a_running_cell(data, tmp_path, capsys):
    """A cell held by a live process counts as running and is not started a second time."""
    out = tmp_path / "held"
    base = RunConfig(model="resnet20", dataset=str(data), holdout=0.25, method="dense",
                     sparsity=0.0,
                     per_class=2, recipe="cpu_small", epochs=1, batch_size=16)
    held = out / plan_cells(["random"], [0.5], [0])[0].folder
    threads = torch.get_num_threads()
    try:
        with cell_lock.CellLock(held, job_id="5_0"):
            record = run_sweep(base, ["random"], [0.5, 0.9], [0], out, progress=False,
                               log=lambda m: None, env={"command": "t"})
            status = sweep_status(out)
            assert main(["sweep", "--status", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert not (held / "summary.json").exists() and not (held / "config.json").exists()
    assert record["cells"]["random/s90.00/seed0"]["status"] == "done"
    assert record["cells"]["random/s90.00/seed0"]["device"] == "cpu"
    assert status["counts"] == {"done": 1, "running": 1, "failed": 0, "pending": 0,
                                "damaged": 0}
    text = capsys.readouterr().out
    assert "running  random/s50.00/seed0: job 5_0" in text
    assert sweep_status(out)["counts"]["pending"] == 1  # lock released: pending, not started

"""``pxprune sweep --transfer``: real transfer cells (pre-trained CIFAR ResNet-20, a few images per
class), the dense reference once per seed, continued schedules equal to a single transfer run,
resume, failures, the report, one-line errors."""

from __future__ import annotations

import contextlib
import json
import math
import re

import pytest
import torch
from helpers import SHARED_DATA
from torch import nn

import pxprune
import pxprune.experiments.transfer_run as TR
import pxprune.experiments.transfer_sweep as TS
from pxprune.cli.main import main
from pxprune.experiments.report.collect import collect
from pxprune.masks import Masks

DATA = SHARED_DATA
R20 = sorted((DATA / "pretrained").glob("resnet20-*.th"))
CIFAR = DATA / "cifar10-jpeg.tar.gz"
needs_data = pytest.mark.skipif(
    not R20 or not CIFAR.exists(), reason=f"needs resnet20 weights and CIFAR JPEG under {DATA}"
)

S1, S2 = 1 - 0.8**2, 1 - 0.8**4  # 36.00 % and 59.04 %: 2 and 4 rounds of 0.8 with --round-factor
GRID = ["--backbone", "resnet20_a", "--dataset", "cifar10", "--train-per-class", "5",
        "--test-per-class", "5", "--round-factor", "0.8", "--device", "cpu", "--no-progress"]


def sweep_args(out, *extra: str, methods: str = "px,random", seeds: str = "0,1") -> list[str]:
    return ["sweep", "--transfer", *GRID, "--methods", methods,
            "--sparsities", f"{100 * S1!r}%,{100 * S2!r}%", "--seeds", seeds, "--out", str(out),
            *extra]


@contextlib.contextmanager
def counting(module, name: str, counts: dict):
    """Count the calls of ``module.name`` (still calling it)."""
    real = getattr(module, name)

    def wrapper(*a, **k):
        counts[name] = counts.get(name, 0) + 1
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, name, wrapper)
        yield


@pytest.fixture(autouse=True)
def _data_root(monkeypatch):
    monkeypatch.setenv("PXPRUNE_DATA", str(DATA))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """PX and random at two sparsities, seeds 0 and 1, with the heavy steps counted."""
    out = tmp_path_factory.mktemp("tsweep") / "r20"
    counts: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PXPRUNE_DATA", str(DATA))
        with counting(TS, "dense_reference", counts), counting(TR, "load_backbone", counts), \
                counting(TS, "load_transfer_data", counts):
            assert main(sweep_args(out)) == 0
    return out, counts


def cell_folders(seeds=(0, 1)):
    return [f"{m}/{s}/seed{k}" for k in seeds for m in ("px", "random")
            for s in ("s36.00", "s59.04")]


@needs_data
def test_cells_dense_reference_once_per_seed_and_sweep_json(finished):
    out, counts = finished
    # data read once, backbone loaded and dense probe fitted once per seed (not once per cell)
    assert counts == {"load_transfer_data": 1, "load_backbone": 2, "dense_reference": 2}
    for seed in (0, 1):
        dense = json.loads((out / f"dense/seed{seed}/summary.json").read_text())
        assert dense["method"] == "dense" and dense["seed"] == seed
        assert 40 < dense["dense"]["test_acc"] <= 100  # pre-trained features, far above chance
        assert (out / f"dense/seed{seed}/probe.safetensors").is_file()
        for folder in cell_folders((seed,)):
            for name in ("config.json", "masks.safetensors", "layers.csv", "layers.txt"):
                assert (out / folder / name).is_file(), (folder, name)
            res = json.loads((out / folder / "summary.json").read_text())
            assert res["seed"] == seed and res["dense"] == dense["dense"]
            assert abs(res["sparsity_actual"] - res["sparsity"]) < 1e-3
            masks = Masks.load(out / folder / "masks.safetensors")
            assert masks.kept == res["kept"] and 0 <= res["pruned"]["test_acc"] <= 100
    px2 = json.loads((out / "px/s59.04/seed1/summary.json").read_text())
    assert px2["rounds"] == 4 and px2["continued_from"] == {"folder": "px/s36.00/seed1",
                                                           "rounds": 2}
    px1 = json.loads((out / "px/s36.00/seed1/summary.json").read_text())
    assert px1["rounds"] == 2 and px1["continued_from"] is None
    rnd = json.loads((out / "random/s59.04/seed0/summary.json").read_text())
    assert rnd["rounds"] == 1 and rnd["continued_from"] is None

    record = json.loads((out / "sweep.json").read_text())
    assert record["kind"] == "transfer" and record["methods"] == ["dense", "px", "random"]
    assert record["seeds"] == [0, 1] and len(record["cells"]) == 10
    proto = record["protocol"]
    assert (proto["backbone"], proto["mode"], proto["train_per_class"],
            proto["test_per_class"], proto["round_factor"], proto["image_size"]) == (
        "resnet20_a", "probe", 5, 5, 0.8, None)
    assert proto["norm"] == "backbone" and proto["head"] == "probe" and proto["per_class"] == 10
    env = record["environment"]
    assert env["torch"] == torch.__version__ and "git_commit" in env and env["device"]
    assert record["invocations"][0]["command"].startswith("pxprune ")
    assert all(e["status"] == "done" for e in record["cells"].values())
    assert record["cells"]["px/s59.04/seed0"]["continued_from"] == "px/s36.00/seed0"


@needs_data
def test_sweep_cell_equals_a_single_transfer_run(finished, tmp_path):
    """The continued PX cell (rounds 3-4 on top of the 36 % cell's masks) is what one
    ``pxprune transfer`` run with the same arguments gives: same masks, same accuracies."""
    out, _ = finished
    single = tmp_path / "single"
    assert main(["transfer", *GRID, "--method", "px", "--sparsity", repr(S2), "--seed", "1",
                 "--out", str(single)]) == 0
    cell = out / "px/s59.04/seed1"
    a, b = Masks.load(single / "masks.safetensors"), Masks.load(cell / "masks.safetensors")
    assert list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)
    ra = json.loads((single / "summary.json").read_text())
    rb = json.loads((cell / "summary.json").read_text())
    assert ra["continued_from"] is None and rb["continued_from"] is not None
    assert ra["rounds"] == rb["rounds"] == 4
    assert ra["pruned"] == {**rb["pruned"], "probe": {**rb["pruned"]["probe"],
                                                      "seconds": ra["pruned"]["probe"]["seconds"]}}
    assert ra["dense"]["test_acc"] == rb["dense"]["test_acc"]
    assert ra["dense"]["probe"]["l2"] == rb["dense"]["probe"]["l2"]


@needs_data
def test_report_table_equals_the_cells(finished, tmp_path):
    out, _ = finished
    results = tmp_path / "r.json"
    assert main(["report", str(out), "--results", str(results)]) == 0
    result = collect(out)
    assert result["kind"] == "transfer" and result["missing"] == []
    assert result["metric"] == "final_test_acc"
    for row in result["rows"]:
        if row["method"] == "dense":
            folders = ["dense/seed0", "dense/seed1"]
            key = "dense"
        else:
            label = f"s{row['sparsity'] * 100:.2f}"
            folders = [f"{row['method']}/{label}/seed{k}" for k in (0, 1)]
            key = "pruned"
        accs = [json.loads((out / f / "summary.json").read_text())[key]["test_acc"]
                for f in folders]
        assert row["values"] == accs and row["mean"] == pytest.approx(sum(accs) / 2)
        assert row["std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
    md = (out / "report.md").read_text()
    px = {f"s{r['sparsity'] * 100:.2f}": r for r in result["rows"] if r["method"] == "px"}
    line = next(x for x in md.splitlines() if x.startswith("| PX |"))
    assert f"{px['s59.04']['mean']:.2f} ± {px['s59.04']['std']:.2f}" in line
    dense = next(r for r in result["rows"] if r["method"] == "dense")
    assert (f"Dense (pre-trained backbone, ridge probe): {dense['mean']:.2f} ± "
            f"{dense['std']:.2f} (n=2)") in md
    assert "backbone resnet20_a" in md and "no training" in md and "probe s / cell" in md
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    data = json.loads(results.read_text())
    assert data["kind"] == "transfer" and data["model"] == "resnet20_a"
    assert len(data["cells"]) == 10


@needs_data
def test_finished_cells_are_skipped(finished, monkeypatch):
    out, _ = finished
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}

    def must_not_run(*a, **k):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(TS, "prune_cell", must_not_run)
    monkeypatch.setattr(TS, "dense_reference", must_not_run)
    assert main(sweep_args(out)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == mtimes
    record = json.loads((out / "sweep.json").read_text())
    assert len(record["invocations"]) >= 2 and record["invocations"][-1]["failed_cells"] == []


@needs_data
def test_other_protocol_or_kind_in_the_folder_is_refused(finished, capsys):
    out, _ = finished
    args = sweep_args(out)
    args[args.index("--test-per-class") + 1] = "6"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "another protocol" in err and "test_per_class" in err
    assert main(["sweep", "--dataset", "cifar10", "--methods", "random", "--sparsities", "0.5",
                 "--out", str(out)]) == 2
    assert "holds a transfer sweep, not a training sweep" in capsys.readouterr().err


@needs_data
def test_a_failing_cell_gets_error_json_and_exit_1(tmp_path, monkeypatch, capsys):
    out = tmp_path / "fail"
    real = TS.prune_cell

    def flaky(cfg, *a, **k):
        if cfg.method == "synflow" and cfg.sparsity == pytest.approx(S2):
            raise RuntimeError("boom")
        return real(cfg, *a, **k)

    monkeypatch.setattr(TS, "prune_cell", flaky)
    assert main(sweep_args(out, methods="synflow,random", seeds="0")) == 1
    assert "synflow/s59.04/seed0" in capsys.readouterr().err
    error = json.loads((out / "synflow/s59.04/seed0/error.json").read_text())
    assert error["error"] == "RuntimeError: boom" and "Traceback" in error["traceback"]
    for folder in ("dense/seed0", "synflow/s36.00/seed0", "random/s36.00/seed0",
                   "random/s59.04/seed0"):
        assert (out / folder / "summary.json").is_file(), folder
    record = json.loads((out / "sweep.json").read_text())
    assert record["invocations"][-1]["failed_cells"] == ["synflow/s59.04/seed0"]
    assert [(c["folder"], c["status"]) for c in collect(out)["missing"]] == [
        ("synflow/s59.04/seed0", "failed")]

    # the re-run finishes it with the saved dense probe as scoring head (read back, not refitted)
    monkeypatch.setattr(TS, "prune_cell", real)
    counts: dict = {}
    with counting(TS, "dense_reference", counts):
        assert main(sweep_args(out, methods="synflow,random", seeds="0")) == 0
    assert counts == {}
    assert not (out / "synflow/s59.04/seed0/error.json").exists()
    assert collect(out)["missing"] == []
    single = tmp_path / "single"
    assert main(["transfer", *GRID, "--method", "synflow", "--sparsity", repr(S2),
                 "--out", str(single)]) == 0
    a = Masks.load(single / "masks.safetensors")
    b = Masks.load(out / "synflow/s59.04/seed0/masks.safetensors")
    assert all(torch.equal(a[n], b[n]) for n in a)
    res = json.loads((out / "synflow/s59.04/seed0/summary.json").read_text())
    assert res["continued_from"]["folder"] == "synflow/s36.00/seed0"
    assert res["pruned"]["test_acc"] == json.loads(
        (single / "summary.json").read_text())["pruned"]["test_acc"]


@needs_data
def test_a_failing_dense_reference_fails_its_seed(tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise RuntimeError("no probe")

    monkeypatch.setattr(TS, "dense_reference", broken)
    out = tmp_path / "dense_fails"
    assert main(sweep_args(out, methods="random", seeds="0")) == 1
    record = json.loads((out / "sweep.json").read_text())
    assert record["cells"]["dense/seed0"]["error"] == "RuntimeError: no probe"
    assert record["cells"]["random/s36.00/seed0"]["error"] == (
        "dense reference of seed 0 failed: RuntimeError: no probe")
    assert (out / "random/s59.04/seed0/error.json").is_file()
    assert len(record["invocations"][-1]["failed_cells"]) == 3


@needs_data
def test_finetune_sweep_fine_tunes_the_dense_reference_once(tmp_path):
    out = tmp_path / "ft"
    assert main(sweep_args(out, "--mode", "finetune", "--epochs", "1", "--batch-size", "16",
                           methods="random", seeds="0")) == 0
    dense = json.loads((out / "dense/seed0/summary.json").read_text())["dense"]
    assert dense["finetune"]["epochs"] == 1 and (out / "dense/seed0/finetune/model.pt").is_file()
    assert dense["test_acc"] == dense["finetune"]["final_test_acc"]
    for s in ("s36.00", "s59.04"):
        res = json.loads((out / f"random/{s}/seed0/summary.json").read_text())
        assert res["dense"] == dense and res["pruned"]["finetune"]["epochs"] == 1
        assert res["pruned"]["test_acc"] == res["pruned"]["finetune"]["final_test_acc"]
        assert not (out / f"random/{s}/seed0/finetune_dense").exists()
    assert main(["report", str(out), "--metric", "best"]) == 0
    assert "Dense (pre-trained backbone fine-tuned)" in (out / "report.md").read_text()


def _mlp() -> nn.Module:
    torch.manual_seed(0)  # the same init every call
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def test_continued_schedule_gives_the_same_masks_as_one_call():
    """prune(start_round=j) on the masks of a j-round prefix == the whole schedule at once."""
    x = torch.randn(12, 8, generator=torch.Generator().manual_seed(1))
    whole = pxprune.prune(_mlp(), "synflow", S2, x, rounds=4, progress=False)
    first = pxprune.prune(_mlp(), "synflow", S1, x, rounds=2, progress=False)
    n = [268_336]  # ResNet-20's prunable weights: big enough for rounding to tell them apart
    assert TS.schedule_counts(1 - S1, 2, n) == TS.schedule_counts(1 - S2, 4, n)[:2]
    rest = pxprune.prune(_mlp(), "synflow", S2, x, rounds=4, masks=first, start_round=2,
                         progress=False)
    assert all(torch.equal(whole[k], rest[k]) for k in whole)
    assert not all(torch.equal(whole[k], first[k]) for k in whole)
    # a rounded sparsity (73.79 % instead of 1 - 0.8**6) is no continuation of 59.04 %
    assert TS.schedule_counts(1 - 0.7379, 6, n)[:4] != TS.schedule_counts(1 - S2, 4, n)
    with pytest.raises(pxprune.masks.PruningError, match="start_round"):
        pxprune.prune(_mlp(), "synflow", S2, x, rounds=4, start_round=4, masks=first)
    with pytest.raises(pxprune.masks.PruningError, match="needs the masks"):
        pxprune.prune(_mlp(), "synflow", S2, x, rounds=4, start_round=2)


def _error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert err.startswith("pxprune sweep: error:"), err
    return err


@pytest.mark.parametrize("extra, message", [
    ([], "--transfer needs --backbone"),
    (["--backbone", "resnet1000"], "unknown backbone 'resnet1000'"),
    (["--backbone", "resnet20_a", "--jobs", "2"], "--jobs does not apply with --transfer"),
    (["--backbone", "resnet20_a", "--schedule", "cosine"],
     "--schedule does not apply with --transfer"),
    (["--backbone", "resnet20_a", "--model", "resnet20"], "--model does not apply with"),
    (["--backbone", "resnet20_a", "--epochs", "2"], "--epochs only applies to --mode finetune"),
    (["--backbone", "resnet20_a", "--round-factor", "1.5"], "--round-factor must lie"),
    (["--backbone", "resnet20_a", "--round-factor", "0.8", "--rounds", "3"], "not both"),
    (["--backbone", "resnet20_a", "--methods", "px,imp"], "method imp trains the network"),
    (["--backbone", "resnet20_a", "--methods", "px,pxx"], "unknown method 'pxx'"),
])
def test_transfer_sweep_usage_errors(tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    err = _error(capsys, ["sweep", "--transfer", "--sparsities", "0.5", "--out", str(out),
                          *extra])
    assert message in err
    assert not out.exists()


def test_transfer_options_without_transfer_are_refused(tmp_path, capsys):
    err = _error(capsys, ["sweep", "--backbone", "resnet20_a", "--out", str(tmp_path / "o")])
    assert "--backbone applies only with --transfer" in err
    err = _error(capsys, ["sweep", "--mode", "probe", "--out", str(tmp_path / "o")])
    assert "--mode applies only with --transfer" in err


@needs_data
def test_best_metric_of_a_probe_sweep_is_refused(finished, capsys):
    out, _ = finished
    assert main(["report", str(out), "--metric", "best"]) == 2
    assert "--metric best applies to training and fine-tuning sweeps" in capsys.readouterr().err


def test_rounds_per_cell_from_the_round_factor():
    """--round-factor 0.8: 2, 4, ..., 18 rounds for multi-round methods at the paper's
    sparsities; one-shot methods keep 1; a spec's rounds= and --rounds win."""
    from dataclasses import replace

    from pxprune.experiments.config import TransferConfig
    from pxprune.experiments.transfer_run import effective_rounds
    from pxprune.schedule import parse_sparsities

    base = TransferConfig(backbone="resnet20_a", round_factor=0.8)
    for method in ("px", "px[variant=cvpr2024]", "synflow", "ntksap"):
        assert [effective_rounds(replace(base, method=method, sparsity=s))
                for s in parse_sparsities("paper")] == list(range(2, 19, 2)), method
    assert effective_rounds(replace(base, method="snip")) == 1
    assert effective_rounds(replace(base, method="px[rounds=5]")) == 5
    assert effective_rounds(replace(base, round_factor=None)) == 100  # PX's default
    assert effective_rounds(replace(base, round_factor=None, method="snip", rounds=3)) == 3


@needs_data
def test_a_sweep_of_result_json_cells_is_still_read(finished, tmp_path, monkeypatch):
    """Transfer cells wrote result.json before they wrote summary.json like every other cell:
    such a folder reports the same table and its finished cells are not run again."""
    import shutil

    out, _ = finished
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for path in old.rglob("summary.json"):
        if "finetune" not in path.parts:
            path.rename(path.with_name("result.json"))
    assert not list(old.rglob("summary.json"))
    assert collect(old)["rows"] == collect(out)["rows"]

    def must_not_run(*a, **k):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(TS, "prune_cell", must_not_run)
    monkeypatch.setattr(TS, "dense_reference", must_not_run)
    assert main(sweep_args(old)) == 0


HOLD_FOLDERS = """
import sys, time
from contextlib import ExitStack
from pathlib import Path
from pxprune.experiments.cell_lock import CellLock
with ExitStack() as held:
    for name in sys.argv[1:]:
        Path(name).mkdir(parents=True, exist_ok=True)
        held.enter_context(CellLock(Path(name)))
    print("held", flush=True)
    time.sleep(120)
"""


@needs_data
def test_a_cell_another_sweep_takes_meanwhile_is_left_to_it(tmp_path, monkeypatch, capsys):
    """Two sweeps on one folder (one per core) share the cells: a cell or dense reference that
    another process starts after this sweep listed its work is skipped, not run twice."""
    import subprocess
    import sys

    out = tmp_path / "shared"
    taken = [out / "random/s36.00/seed0", out / "dense/seed1"]
    holder: list = []
    real_start = TS.start_sweep

    def start_then_other_sweep_takes_two(*a, **k):
        listed = real_start(*a, **k)
        holder.append(subprocess.Popen([sys.executable, "-c", HOLD_FOLDERS, *map(str, taken)],
                                       stdout=subprocess.PIPE, text=True))
        assert holder[0].stdout.readline().strip() == "held"
        return listed

    monkeypatch.setattr(TS, "start_sweep", start_then_other_sweep_takes_two)
    try:
        assert main(sweep_args(out, methods="random")) == 0
        printed = capsys.readouterr().out
        assert "skip   random/s36.00/seed0: " in printed and f"pid {holder[0].pid}" in printed
        assert "skip   the 2 other cell(s) of seed 1: its dense reference" in printed
        assert re.search(r"done   random/s59.04/seed0: test acc \d+\.\d\d % \(\d+ s\)", printed)
        for folder in taken:  # the other process's folders: nothing written by this sweep
            assert sorted(p.name for p in folder.iterdir()) == ["running.json"], folder
        for folder in ("dense/seed0", "random/s59.04/seed0"):
            assert (out / folder / "summary.json").is_file(), folder
        assert not (out / "random/s36.00/seed1").exists()
        record = json.loads((out / "sweep.json").read_text())
        assert record["cells"]["random/s36.00/seed0"]["status"] == "running"
        assert record["cells"]["dense/seed1"]["status"] == "running"
    finally:
        for h in holder:
            h.kill()  # its running.json stays behind naming a dead pid: taken over below
            h.wait()
    monkeypatch.setattr(TS, "start_sweep", real_start)
    assert main(sweep_args(out, methods="random")) == 0
    assert collect(out)["missing"] == []


@needs_data
def test_a_cell_another_sweep_finished_meanwhile_is_read_back(finished, monkeypatch, capsys):
    out, _ = finished
    before = {p: p.read_bytes() for p in out.rglob("summary.json")}
    real_start = TS.start_sweep

    def listing_finished_cells_too(out_, cells, *a, **k):  # as if listed before they finished
        record, _ = real_start(out_, cells, *a, **k)
        return record, list(cells)

    def must_not_run(*a, **k):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(TS, "start_sweep", listing_finished_cells_too)
    monkeypatch.setattr(TS, "prune_cell", must_not_run)
    monkeypatch.setattr(TS, "dense_reference", must_not_run)
    assert main(sweep_args(out)) == 0
    assert capsys.readouterr().out.count("was finished by another sweep meanwhile") == 8
    assert {p: p.read_bytes() for p in out.rglob("summary.json")} == before
    record = json.loads((out / "sweep.json").read_text())
    for folder in cell_folders():
        summary = json.loads((out / folder / "summary.json").read_text())
        assert record["cells"][folder]["status"] == "done"
        assert record["cells"][folder]["final_test_acc"] == summary["pruned"]["test_acc"]

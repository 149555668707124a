"""Tests of pxprune sweep / report: skip finished cells, resume, failures, partial reports."""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import shutil

import pytest
import torch
from helpers import sweep_args

import pxprune.api
import pxprune.experiments.prune_cell
import pxprune.experiments.run
from pxprune.cli.main import main
from pxprune.experiments.report.collect import collect
from pxprune.experiments.report.tables import format_markdown
from pxprune.experiments.sweep import cells as sweep_cells
from pxprune.experiments.sweep import local as sweep_local
from pxprune.experiments.sweep import worker as sweep_worker
from pxprune.experiments.sweep.grid import plan_cells, sparsity_label


@pytest.fixture(scope="module")
def data(tiny_pt):
    return tiny_pt


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    """A complete 2 methods x 2 sparsities x 2 seeds + dense sweep, run once for the module."""
    out = tmp_path_factory.mktemp("sweep") / "full"
    assert main(sweep_args(data, out)) == 0
    return out


def all_cells(seeds=(0, 1)):
    return plan_cells(["random", "magnitude", "dense"], [0.5, 0.9], list(seeds))


def test_cell_layout():
    cells = all_cells(seeds=(0,))
    assert [c.folder for c in cells] == ["random/s50.00/seed0", "random/s90.00/seed0",
                                         "magnitude/s50.00/seed0", "magnitude/s90.00/seed0",
                                         "dense/seed0"]
    assert sparsity_label(1 - 0.8**18) == "s98.20"
    with pytest.raises(Exception, match="collide"):
        plan_cells(["px"], [0.98201, 0.98199], [0])


def test_sweep_writes_every_cell_and_sweep_json(finished, data):
    for cell in all_cells():
        summary = json.loads((finished / cell.folder / "summary.json").read_text())
        assert summary["config"]["method"] == cell.method
        assert summary["config"]["seed"] == cell.seed
        assert summary["epochs"] == 2
        if cell.method == "dense":
            assert summary["density"] == 1.0
        else:
            assert math.isclose(summary["density"], 1 - cell.sparsity, abs_tol=1e-3)
    record = json.loads((finished / "sweep.json").read_text())
    assert record["methods"] == ["random", "magnitude", "dense"]
    assert record["seeds"] == [0, 1]
    assert record["protocol"]["model"] == "resnet20" and record["protocol"]["epochs"] == 2
    assert record["recipe"]["schedule"] == "onecycle" and record["recipe"]["epochs"] == 2
    assert record["environment"]["torch"] == torch.__version__
    assert "git_commit" in record["environment"] and record["environment"]["device"]
    assert "git_dirty" in record["environment"]
    assert "env_vars" in record["environment"]
    # main(argv) called from code records its argv, not the test runner's command line
    assert record["invocations"][0]["command"] == "pxprune " + shlex.join(
        sweep_args(data, finished))
    assert all(e["status"] == "done" for e in record["cells"].values())
    assert len(record["cells"]) == 10


def test_finished_cells_are_skipped(finished, data, monkeypatch):
    mtimes = {p: p.stat().st_mtime_ns for p in finished.rglob("summary.json")}

    def must_not_run(*a, **k):
        raise AssertionError("run_experiment called for a finished cell")

    monkeypatch.setattr(sweep_worker, "run_experiment", must_not_run)
    assert main(sweep_args(data, finished)) == 0
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("summary.json")} == mtimes
    assert len(json.loads((finished / "sweep.json").read_text())["invocations"]) == 2


def test_other_protocol_in_same_folder_is_refused(finished, data, capsys):
    args = sweep_args(data, finished)
    args[args.index("--epochs") + 1] = "3"
    assert main(args) == 2
    assert "another protocol" in capsys.readouterr().err


def test_report_mean_std_markdown_csv_png(finished, tmp_path):
    results = tmp_path / "results" / "r.json"
    assert main(["report", str(finished), "--results", str(results)]) == 0
    result = collect(finished)
    assert result["missing"] == []
    for row in result["rows"]:  # recompute from the cells' own summary.json files
        folders = ([f"dense/seed{s}" for s in (0, 1)] if row["method"] == "dense" else
                   [f"{row['method']}/{sparsity_label(row['sparsity'])}/seed{s}" for s in (0, 1)])
        accs = [json.loads((finished / f / "summary.json").read_text())["final_test_acc"]
                for f in folders]
        assert row["n"] == 2 and row["values"] == accs
        assert row["mean"] == pytest.approx(sum(accs) / 2)
        assert row["std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
    md = (finished / "report.md").read_text()
    for label, col in (("s50.00", 1), ("s90.00", 2)):
        means = {r["method"]: r["mean"] for r in result["rows"]
                 if r["method"] != "dense" and sparsity_label(r["sparsity"]) == label}
        best = max(means.values())
        for name, method in (("Random", "random"), ("Magnitude", "magnitude")):
            line = next(x for x in md.splitlines() if x.startswith(f"| {name} |"))
            cell = line.split("|")[col + 1].strip()
            assert cell.startswith(f"**{means[method]:.2f}") == math.isclose(means[method], best)
    assert "Dense (unpruned):" in md
    with open(finished / "report.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and {r["method"] for r in rows} == {"random", "magnitude", "dense"}
    png = (finished / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    data = json.loads(results.read_text())
    assert data["torch"] == torch.__version__ and data["seeds"] == [0, 1]
    assert data["protocol"]["epochs"] == 2 and data["protocol"]["schedule"] == "onecycle"
    assert len(data["cells"]) == 10 and all(c["final_test_acc"] is not None
                                            for c in data["cells"])
    assert data["command"][0].startswith("pxprune ") and "git_commit" in data
    assert {c["invocation"] for c in data["cells"]} == {0}  # all run by the first invocation
    assert "| Random | 4 |" in md and "prune s / cell" in md  # the cost table


def test_markdown_bolds_best_and_marks_ties():
    rows = [{"method": m, "sparsity": 0.9, "n": 1, "mean": v, "std": None, "min": v, "max": v,
             "seeds": [0], "values": [v]} for m, v in (("px", 80.0), ("snip", 70.0),
                                                       ("random", 80.0))]
    result = {"sweep_dir": "x", "record": {}, "metric": "final_test_acc", "cells": [],
              "rows": rows, "missing": [], "methods": ["px", "snip", "random"],
              "sparsities": [0.9]}
    md = format_markdown(result)
    assert "| PX | **80.00** |" in md and "| Random | **80.00** |" in md
    assert "| SNIP | 70.00 |" in md


class Stop(KeyboardInterrupt):
    pass


def test_interrupted_cell_resumes_and_partial_report(data, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    real_train = pxprune.training.train.train

    def train_stopping_after_epoch_1(*a, **k):
        def cb(record):
            if record["epoch"] == 1:
                raise Stop

        return real_train(*a, **k, callback=cb)

    monkeypatch.setattr(pxprune.experiments.run, "train", train_stopping_after_epoch_1)
    with pytest.raises(Stop):
        sweep_local.run_sweep(
            _base(data), ["random", "dense"], [0.9], [0], out, progress=False, log=lambda m: None,
            env={"command": "test"})
    cell = out / "random/s90.00/seed0"
    assert (cell / "checkpoint.pt").exists() and not (cell / "summary.json").exists()
    epoch1 = (cell / "metrics.jsonl").read_text().splitlines()
    assert len(epoch1) == 1

    partial = collect(out)
    assert partial["cells"] == []
    assert [(c["folder"], c["status"]) for c in partial["missing"]] == [
        ("random/s90.00/seed0", "partial"), ("dense/seed0", "missing")]
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "`random/s90.00/seed0` — partial" in md and "`dense/seed0` — missing" in md
    assert (out / "report.png").exists()

    monkeypatch.setattr(pxprune.experiments.run, "train", real_train)

    def no_pruning(*a, **k):
        raise AssertionError("a resumed cell must reuse its saved masks")

    monkeypatch.setattr(pxprune.experiments.prune_cell, "prune", no_pruning)
    record = sweep_local.run_sweep(_base(data), ["random", "dense"], [0.9], [0], out,
                                     progress=False, log=lambda m: None, env={"command": "t"})
    assert record["cells"]["random/s90.00/seed0"]["status"] == "done", record["cells"]
    lines = (cell / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == epoch1[0]  # continued after epoch 1, not restarted
    assert collect(out)["missing"] == []


def _base(data):
    from pxprune.experiments.config import RunConfig

    return RunConfig(model="resnet20", dataset=str(data), holdout=0.25, method="dense",
                     sparsity=0.0,
                     per_class=2, recipe="cpu_small", epochs=2, batch_size=16)


def test_failed_cell_is_recorded_and_others_run(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "fail"
    real = sweep_worker.run_experiment

    def flaky(cfg, folder, **kw):
        if cfg.method == "magnitude" and cfg.sparsity == 0.5:
            raise RuntimeError("boom")
        return real(cfg, folder, **kw)

    monkeypatch.setattr(sweep_worker, "run_experiment", flaky)
    assert main(sweep_args(data, out, seeds="0")) == 1
    assert "magnitude/s50.00/seed0" in capsys.readouterr().err
    error = json.loads((out / "magnitude/s50.00/seed0/error.json").read_text())
    assert error["error"] == "RuntimeError: boom" and "Traceback" in error["traceback"]
    others = [c for c in all_cells(seeds=(0,)) if c.folder != "magnitude/s50.00/seed0"]
    assert all((out / c.folder / "summary.json").exists() for c in others)
    record = json.loads((out / "sweep.json").read_text())
    assert record["cells"]["magnitude/s50.00/seed0"]["status"] == "failed"
    assert record["invocations"][-1]["failed_cells"] == ["magnitude/s50.00/seed0"]

    result = collect(out)
    assert [(c["folder"], c["status"], c["error"]) for c in result["missing"]] == [
        ("magnitude/s50.00/seed0", "failed", "RuntimeError: boom")]
    magnitude_50 = [r for r in result["rows"] if r["method"] == "magnitude"
                    and r["sparsity"] == 0.5]
    assert magnitude_50 == []
    assert re.search(r"\| Magnitude \| – \|", format_markdown(result))

    monkeypatch.setattr(sweep_worker, "run_experiment", real)  # the re-run finishes it
    assert main(sweep_args(data, out, seeds="0")) == 0
    assert not (out / "magnitude/s50.00/seed0/error.json").exists()
    assert collect(out)["missing"] == []


def test_parallel_jobs_isolate_a_failing_cell(data, tmp_path):
    """--jobs 2: cells run in spawned processes; a cell whose folder is unusable fails alone."""
    out = tmp_path / "par"
    bad = out / "random/s90.00/seed0"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text(json.dumps({"method": "random", "sparsity": 0.9,
                                                 "seed": 0, "epochs": 99}))
    (bad / "metrics.jsonl").write_text("")  # work of that config (a config alone claims nothing)
    assert main(sweep_args(data, out, "--jobs", "2", methods="random", seeds="0")) == 1
    assert (out / "random/s50.00/seed0/summary.json").exists()
    assert (out / "random/s50.00/seed0/sweep.log").exists()
    error = json.loads((bad / "error.json").read_text())
    assert "config.json that pxprune did not write" in error["error"]  # a foreign config
    record = json.loads((out / "sweep.json").read_text())
    assert record["invocations"][-1]["jobs"] == 2
    assert record["cells"]["random/s50.00/seed0"]["status"] == "done"


def test_sweep_json_written_with_later_fields_at_default_still_matches(tmp_path):
    """A sweep.json that recorded fields now left out at their default (holdout 0.0, the
    never-protocol allow_disconnected) resumes; a real difference is still refused."""
    from dataclasses import replace

    from pxprune.experiments.config import RunConfig
    from pxprune.experiments.resolve import UsageError
    from pxprune.experiments.sweep.records import load_record, protocol_of

    base = RunConfig(method="dense", sparsity=0.0, recipe="cpu_small", precision="bf16")
    old = {**protocol_of(base), "holdout": 0.0, "allow_disconnected": False,
           "test_dataset": None}
    (tmp_path / "sweep.json").write_text(json.dumps({"kind": "training", "protocol": old,
                                                     "methods": ["dense"]}))
    assert load_record(tmp_path, protocol_of(base))["methods"] == ["dense"]
    with pytest.raises(UsageError, match="differs in: precision"):
        load_record(tmp_path, protocol_of(replace(base, precision="fp32")))


# -- damaged or edited cells ------------------------------------------------------------------
CUT = "random/s50.00/seed0"  # the cell each damage below is done to


@pytest.fixture(scope="module")
def small(tmp_path_factory, data):
    """random at 50 % and 90 % and dense, seed 0, finished once; each test damages a copy."""
    out = tmp_path_factory.mktemp("sweep") / "small"
    sweep_local.run_sweep(_base(data), ["random", "dense"], [0.5, 0.9], [0], out,
                                        progress=False, log=lambda m: None, env={"command": "t"})
    return out


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


DAMAGES = {  # name: (what is done to the cell folder, the file the one-line reason names)
    "masks truncated": (lambda c: (c / "masks.safetensors").write_bytes(
        (c / "masks.safetensors").read_bytes()[:300]), "masks.safetensors is unreadable"),
    "masks deleted": (lambda c: (c / "masks.safetensors").unlink(),
                      "masks.safetensors is missing"),
    "another cell's masks": (lambda c: shutil.copy(c.parent.parent / "s90.00/seed0" /
                                                   "masks.safetensors", c),
                             "masks.safetensors does not match"),
    "config sparsity edited": (lambda c: _edit_json(c / "config.json", sparsity=0.9),
                               "config.json says sparsity 0.9"),
    "both configs moved to 90 %": (lambda c: (_edit_json(c / "config.json", sparsity=0.9),
                                              _edit_json(c / "summary.json", config={
                                                  **json.loads((c / "config.json").read_text()),
                                                  "sparsity": 0.9})),
                                   "summary.json says sparsity 0.9 but the cell's folder is "
                                   "for 0.5"),
    "summary truncated": (lambda c: (c / "summary.json").write_text(
        (c / "summary.json").read_text()[:200]), "summary.json is unreadable"),
    "summary garbage bytes": (lambda c: (c / "summary.json").write_bytes(b"\xff\xfe\x00\x9c"),
                              "summary.json is unreadable"),
    "summary a JSON list": (lambda c: (c / "summary.json").write_text("[1, 2]"),
                            "summary.json holds a JSON list"),
    "accuracy abc": (lambda c: _edit_json(c / "summary.json", final_test_acc="abc"),
                     "summary.json: final_test_acc is 'abc'"),
    "config garbage": (lambda c: (c / "config.json").write_bytes(b"\x00{{garbage"),
                       "config.json is unreadable"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_cell_is_listed_as_damaged_and_left_out(small, tmp_path, capsys, damage):
    out = tmp_path / "s"
    shutil.copytree(small, out)
    do, says = DAMAGES[damage]
    do(out / CUT)
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{CUT} (damaged: {says}" in printed, printed
    result = collect(out)
    assert sorted(c["folder"] for c in result["cells"]) == ["dense/seed0", "random/s90.00/seed0"]
    assert [(c["folder"], c["status"]) for c in result["missing"]] == [(CUT, "damaged")]
    assert says in result["missing"][0]["error"]
    assert [r["n"] for r in result["rows"]] == [1, 1]  # the other cells are still reported
    assert f"`{CUT}` — damaged: {says}" in (out / "report.md").read_text()
    assert main(["sweep", "--status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "done 2" in status and "damaged 1" in status, status
    assert f"damaged  {CUT}: {says}" in status


def test_a_results_only_copy_is_reported(small, tmp_path):
    """Committed benchmark cells keep no masks and no weights (config, summary, metrics, layer
    tables): such a cell is reported from its checked summary."""
    out = tmp_path / "s"
    shutil.copytree(small, out)
    for cell in ("random/s50.00/seed0", "random/s90.00/seed0", "dense/seed0"):
        for name in ("masks.safetensors", "model.pt"):
            (out / cell / name).unlink()
    result = collect(out)
    assert len(result["cells"]) == 3 and result["missing"] == []


def test_resume_sets_a_damaged_cell_aside_and_runs_it_again(small, data, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(small, out)
    cut = out / CUT
    DAMAGES["masks truncated"][0](cut)
    damaged_masks = (cut / "masks.safetensors").read_bytes()
    (cut / "notes.txt").write_text("a user's file")
    DAMAGES["config garbage"][0](out / "dense/seed0")
    intact = (out / "random/s90.00/seed0/summary.json").stat().st_mtime_ns
    messages: list[str] = []
    record = sweep_local.run_sweep(_base(data), ["random", "dense"],
                                                 [0.5, 0.9], [0], out, progress=False,
                                                 log=messages.append, env={"command": "t"})
    assert all(e["status"] == "done" for e in record["cells"].values()), record["cells"]
    assert any(m.startswith(f"  damaged {CUT}: masks.safetensors is unreadable")
               for m in messages), messages
    assert any(m.startswith("  damaged dense/seed0: config.json is unreadable")
               for m in messages), messages
    assert (cut / ".damaged-1" / "masks.safetensors").read_bytes() == damaged_masks
    assert (cut / "notes.txt").read_text() == "a user's file"  # not pxprune's: left in place
    assert (out / "random/s90.00/seed0/summary.json").stat().st_mtime_ns == intact
    result = collect(out)  # the set-aside files are not reported as a second cell
    assert len(result["cells"]) == 3 and result["missing"] == []
    fresh = sweep_cells.cell_state(out, plan_cells(["random"], [0.5], [0])[0])
    assert fresh.state == "done" and fresh.done["masks_sha256"] == json.loads(
        (small / CUT / "summary.json").read_text())["masks_sha256"]  # same seed, same masks


@pytest.mark.parametrize("command", ["report", "status", "sweep"])
def test_a_truncated_sweep_json_is_one_line(small, tmp_path, data, capsys, command):
    out = tmp_path / "s"
    shutil.copytree(small, out)
    text = (out / "sweep.json").read_text()
    (out / "sweep.json").write_text(text[: len(text) // 2])
    argv = {"report": ["report", str(out)], "status": ["sweep", "--status", str(out)],
            "sweep": sweep_args(data, out, methods="random,dense", seeds="0")}[command]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{out / 'sweep.json'} is unreadable" in err, err
    assert (out / "sweep.json").read_text() == text[: len(text) // 2]  # left as found


def test_two_sweeps_on_one_folder_keep_each_others_record(tmp_path):
    """Two invocations side by side (e.g. one per seed) each hold the record they read at
    start; every save merges, so neither erases the other's grid, invocations or cells."""
    from pxprune.experiments.sweep.records import SWEEP_FILE, read_record, save_record

    def opened(sparsity: float, seed: int, started: str) -> dict:
        return {"format": "pxprune.sweep/1", "kind": "training", "protocol": {},
                "methods": ["dense", "px"], "sparsities": [sparsity], "seeds": [seed],
                "invocations": [{"command": f"pxprune sweep --seeds {seed}",
                                 "started": started}],
                "cells": {f"px|{sparsity}|{seed}": {"method": "px"}}}

    a = opened(0.982, 0, "2026-12-04T10:00")
    b = opened(0.956, 1, "2026-12-04T10:01")  # read before a wrote anything
    save_record(tmp_path, a)
    save_record(tmp_path, b)
    a["cells"]["px|0.982|0"].update(status="done", final_test_acc=66.2)
    save_record(tmp_path, a)  # a's stale copy of b's work must not erase it
    b["cells"]["px|0.956|1"].update(status="failed", error="boom")
    b["cells"]["px|0.982|0"] = {"method": "px"}  # b saw the cell before a finished it
    save_record(tmp_path, b)
    disk = read_record(tmp_path / SWEEP_FILE)
    assert sorted(disk["sparsities"]) == [0.956, 0.982] and sorted(disk["seeds"]) == [0, 1]
    assert [i["started"] for i in disk["invocations"]] == ["2026-12-04T10:00",
                                                           "2026-12-04T10:01"]
    assert disk["cells"]["px|0.982|0"]["status"] == "done"
    assert disk["cells"]["px|0.982|0"]["final_test_acc"] == 66.2
    assert disk["cells"]["px|0.956|1"]["status"] == "failed"
    assert disk == b  # the writer's copy is the merged record

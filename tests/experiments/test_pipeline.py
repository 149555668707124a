"""One run cell (prune + train + evaluate): finished folders are read back, killed ones resume."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import pxprune.experiments.run as run_module
from pxprune import Masks
from pxprune.cli.main import main
from pxprune.errors import PxpruneError
from pxprune.experiments.config import RunConfig
from pxprune.experiments.run import run_experiment


def config(data_file: str, model_spec: str, **changes) -> RunConfig:
    base = dict(model=model_spec, dataset=data_file, holdout=0.25, method="snip", sparsity=0.5,
                seed=0, per_class=4, recipe="cpu_small", epochs=3, batch_size=8, lr=0.05)
    return RunConfig(**{**base, **changes})


class Stop(Exception):
    pass


def test_run_writes_everything_and_is_not_rerun(tmp_path, data_file, model_spec):
    cfg = config(data_file, model_spec)
    out = tmp_path / "cell"
    summary = run_experiment(cfg, out, progress=False, log=lambda m: None)
    for name in ("config.json", "masks.safetensors", "prune.json", "layers.csv", "layers.txt",
                 "metrics.jsonl", "summary.json"):
        assert (out / name).exists(), name
    masks = Masks.load(out / "masks.safetensors")
    assert masks.kept == round(0.5 * masks.total)
    assert summary["density"] == pytest.approx(masks.density())
    assert summary["final_test_acc"] > 60.0  # bright vs dark is easy even half-pruned
    state = torch.load(out / "model.pt", weights_only=True)
    state = state.get("model", state)
    for name, keep in masks.items():
        assert (state[name][~keep] == 0).all(), name

    messages: list[str] = []
    again = run_experiment(cfg, out, progress=False, log=messages.append)
    assert again == summary
    assert any("already finished" in m for m in messages)


def test_killed_run_resumes_with_saved_masks_to_the_same_result(tmp_path, data_file,
                                                                 model_spec, monkeypatch):
    cfg = config(data_file, model_spec, method="random")
    full = run_experiment(cfg, tmp_path / "full", progress=False, log=lambda m: None)

    real_train = run_module.train

    def stop_after_first_epoch(*args, **kwargs):
        def callback(record):
            if record["epoch"] == 1:
                raise Stop
        return real_train(*args, **kwargs, callback=callback)

    monkeypatch.setattr(run_module, "train", stop_after_first_epoch)
    with pytest.raises(Stop):
        run_experiment(cfg, tmp_path / "cut", progress=False, log=lambda m: None)
    assert not (tmp_path / "cut" / "summary.json").exists()
    monkeypatch.setattr(run_module, "train", real_train)

    messages: list[str] = []
    resumed = run_experiment(cfg, tmp_path / "cut", progress=False, log=messages.append)
    assert any("resuming with the saved masks" in m for m in messages)
    assert resumed["final_test_acc"] == full["final_test_acc"]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    a, b = a.get("model", a), b.get("model", b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_folder_of_another_config_is_refused(tmp_path, data_file, model_spec):
    out = tmp_path / "cell"
    run_experiment(config(data_file, model_spec, epochs=1), out, progress=False,
                   log=lambda m: None)
    # finished: another config is refused, never answered with the old summary
    with pytest.raises(PxpruneError, match="another configuration.*sparsity 0.5 there, 0.7"):
        run_experiment(config(data_file, model_spec, epochs=1, sparsity=0.7), out,
                       progress=False, log=lambda m: None)
    (out / "summary.json").unlink()
    with pytest.raises(PxpruneError, match="another configuration"):
        run_experiment(config(data_file, model_spec, epochs=1, sparsity=0.7), out,
                       progress=False, log=lambda m: None)


def test_dense_cell_keeps_every_weight(tmp_path, data_file, model_spec):
    summary = run_experiment(config(data_file, model_spec, method="dense", sparsity=0.0,
                                    epochs=1), tmp_path / "d", progress=False, log=lambda m: None)
    assert summary["density"] == 1.0


def test_run_command_end_to_end(tmp_path, data_file, model_spec, capsys):
    args = ["run", "--model", model_spec, "--dataset", data_file, "--holdout", "0.25",
            "--method", "magnitude",
            "--sparsity", "60%", "--per-class", "4", "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "r")]
    assert main(args) == 0
    out = capsys.readouterr().out
    printed = json.loads(out[out.rindex("{"):])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["density"] == pytest.approx(0.4, abs=0.01)
    assert printed["final_test_acc"] == summary["final_test_acc"]
    assert main(args) == 0  # finished: read back, not retrained
    assert "already finished" in capsys.readouterr().out


def test_imp_cell_trains_prunes_rewinds_then_trains_the_ticket(tmp_path, data_file, model_spec):
    cfg = config(data_file, model_spec, method="imp", sparsity=0.36, epochs=1)
    out = tmp_path / "imp"
    summary = run_experiment(cfg, out, progress=False, log=lambda m: None)
    # 36 % = two iterations of 20 %: two trainings, each in its own finished folder
    assert sorted(p.name for p in (out / "imp").iterdir()) == ["iter0", "iter1"]
    assert all((out / "imp" / p / "summary.json").exists() for p in ("iter0", "iter1"))
    masks = Masks.load(out / "masks.safetensors")
    assert masks.kept == round(0.64 * masks.total)
    assert summary["density"] == pytest.approx(masks.density())
    # the second iteration kept the largest trained weights among those alive after the first
    first = torch.load(out / "imp" / "iter1" / "model.pt", weights_only=True)
    first = first.get("model", first)
    kept = torch.cat([first[n][masks[n]].abs() for n in masks])
    alive_dropped = torch.cat([first[n][(~masks[n]) & (first[n] != 0)].abs() for n in masks])
    assert kept.min() >= alive_dropped.max()


def test_demo_command_compares_the_methods(tmp_path, data_file, model_spec, capsys,
                                           monkeypatch):
    """``pxprune demo`` runs every demo method with one protocol and prints one line each."""
    from dataclasses import replace

    from pxprune.cli import demo as commands
    from pxprune.methods.spec import folder_name

    monkeypatch.setattr(commands, "DEMO", replace(commands.DEMO, model=model_spec, epochs=1,
                                                  train_per_class=None, test_per_class=None,
                                                  per_class=4, batch_size=8,
                                                  allow_disconnected=True))  # 232 weights
    assert main(["demo", "--dataset", data_file, "--holdout", "0.25", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("== demo result"))
    rows = lines[start + 1:]
    assert [r.split()[0] for r in rows] == list(commands.DEMO_METHODS)
    for method, row in zip(commands.DEMO_METHODS, rows, strict=True):
        summary = json.loads((tmp_path / folder_name(method) / "summary.json").read_text())
        assert f"{summary['final_test_acc']:5.1f} %" in row
        assert f"density {summary['density']:.4f}" in row


def test_run_under_torchrun_two_processes(tmp_path, data_file, model_spec):
    """``torchrun --nproc_per_node 2 -m pxprune run``: gloo DDP on CPU, rank 0 scores and
    writes, both ranks train, one summary is printed."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    module_dir = sys.path[0]  # the fixture put the model module first on sys.path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([module_dir, *sys.path[1:]]),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    done = subprocess.run(
        [str(torchrun if torchrun.exists() else "torchrun"), "--nproc_per_node", "2",
         "--master_port", "29613", "-m", "pxprune", "run", "--model", model_spec, "--dataset",
         data_file, "--holdout", "0.25", "--method", "px", "--sparsity", "0.5", "--per-class",
         "4", "--epochs", "2",
         "--batch-size", "8", "--device", "cpu", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"final_test_acc"') == 1  # printed by rank 0 only
    summary = json.loads((out / "summary.json").read_text())
    masks = Masks.load(out / "masks.safetensors")
    assert masks.kept == round(0.5 * masks.total)
    assert summary["density"] == pytest.approx(masks.density())
    state = torch.load(out / "model.pt", weights_only=True)
    state = state.get("model", state)
    for name, keep in masks.items():
        assert (state[name][~keep] == 0).all(), name

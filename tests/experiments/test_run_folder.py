"""A run cell: explicit test split for a user file, pruning time over resumes, disconnection."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import pxprune.api
import pxprune.experiments.run
from pxprune import checkpoint as prune_checkpoint
from pxprune.cli.main import main
from pxprune.errors import PxpruneError
from pxprune.experiments.config import RunConfig
from pxprune.experiments.run import run_experiment
from pxprune.masks import Masks


def run_args(model_spec: str, data_file: str, out, *extra: str) -> list[str]:
    return ["run", "--model", model_spec, "--dataset", data_file, "--method", "magnitude",
            "--sparsity", "0.5", "--per-class", "4", "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def test_a_data_file_needs_an_explicit_test_split(tmp_path, data_file, model_spec, capsys):
    out = tmp_path / "r"
    code = main(run_args(model_spec, data_file, out))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--test-dataset" in err and "--holdout" in err
    # the corrected command runs in the same folder (the failed one left no claim)
    assert main(run_args(model_spec, data_file, out, "--holdout", "0.25")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_examples"] == 24 and summary["test_examples"] == 8
    assert "held out per class (seed 0)" in summary["test_split"]


def test_a_separate_test_file(tmp_path, data_file, model_spec):
    rng = np.random.default_rng(1)
    test_file = tmp_path / "test.npz"
    np.savez(test_file, images=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
             labels=np.array([0, 1, 0, 1, 0, 1]))
    out = tmp_path / "r"
    assert main(run_args(model_spec, data_file, out, "--test-dataset", str(test_file))) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_examples"] == 32 and summary["test_examples"] == 6
    assert summary["test_split"] == f"the file {test_file}"


def test_a_resumed_pruning_counts_its_earlier_time_and_says_so(tmp_path, data_file,
                                                               model_spec, monkeypatch):
    cfg = RunConfig(model=model_spec, dataset=data_file, holdout=0.25, method="synflow",
                    sparsity=0.5, rounds=4, per_class=4, recipe="cpu_small", epochs=1,
                    batch_size=8)
    out = tmp_path / "cell"
    monkeypatch.setattr(prune_checkpoint, "CHECKPOINT_SECONDS", 0.0)  # save every round
    real, calls = pxprune.api.threshold, {"n": 0}

    def slow_then_ctrl_c(*args, **kwargs):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        time.sleep(0.4)
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(pxprune.api, "threshold", slow_then_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(cfg, out, progress=False, log=lambda _m: None)
    assert (out / prune_checkpoint.FILE_NAME).exists()
    messages: list[str] = []
    start = time.perf_counter()
    summary = run_experiment(cfg, out, progress=False, log=messages.append)
    assert any("resuming the pruning after round 2 of 4" in m for m in messages), messages
    seconds = json.loads((out / "prune.json").read_text())["prune_seconds"]
    assert seconds >= 0.8  # the two slow rounds before the Ctrl-C count
    assert seconds <= 0.8 + (time.perf_counter() - start) + 1.0
    assert summary["prune"]["prune_seconds"] == seconds


def test_masks_that_disconnect_the_output_are_refused_unless_asked(tmp_path, data_file,
                                                                   model_spec, capsys):
    out = tmp_path / "r"
    args = run_args(model_spec, data_file, out, "--holdout", "0.25")
    args[args.index("--sparsity") + 1] = "0.995"  # keeps 1 of 232 weights
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "disconnect the output" in err and "--allow-disconnected" in err
    assert not (out / "masks.safetensors").exists()
    assert main([*args, "--allow-disconnected"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["collapsed_layers"]  # flagged in summary.json
    assert "COLLAPSED" in (out / "layers.txt").read_text()


def test_the_config_keeps_its_test_split():
    cfg = RunConfig.from_dict({"dataset": "x.npz", "holdout": 0.2})
    assert cfg.holdout == 0.2 and cfg.test_dataset is None
    with pytest.raises(PxpruneError, match="not both"):
        from pxprune.experiments.data_split import train_test_sets

        train_test_sets("x.npz", "y.npz", 0.2, 0)


def test_the_new_fields_keep_older_folders_and_sweeps_valid(tmp_path, data_file, model_spec):
    from dataclasses import replace

    from pxprune.cli.common import config_from_args
    from pxprune.cli.main import build_parser
    from pxprune.experiments.sweep.records import protocol_of

    assert not {"test_dataset", "holdout", "allow_disconnected"} & set(protocol_of(RunConfig()))
    assert protocol_of(RunConfig(holdout=0.2))["holdout"] == 0.2
    args = build_parser().parse_args(["run", "--out", "x", "--device", "cpu"])
    assert config_from_args(args).allow_disconnected is False
    args.command = "sweep"  # a sweep measures collapse: its cells keep such masks
    assert config_from_args(args).allow_disconnected is True

    cfg = RunConfig(model=model_spec, dataset=data_file, holdout=0.25, method="magnitude",
                    sparsity=0.5, per_class=4, recipe="cpu_small", epochs=1, batch_size=8)
    out = tmp_path / "c"
    run_experiment(cfg, out, progress=False, log=lambda _m: None)
    saved = json.loads((out / "config.json").read_text())
    del saved["allow_disconnected"]  # a folder written before the field existed
    (out / "config.json").write_text(json.dumps(saved))
    (out / "summary.json").unlink()
    messages: list[str] = []
    run_experiment(replace(cfg, allow_disconnected=True), out, progress=False,
                   log=messages.append)
    assert any("resuming with the saved masks" in m for m in messages)


def test_the_prune_command_says_it_resumes(tmp_path, data_file, model_spec, monkeypatch,
                                           capsys):
    argv = ["prune", "--model", model_spec, "--data", data_file, "--method", "synflow",
            "--rounds", "4", "--sparsity", "0.5", "--per-class", "2", "--device", "cpu",
            "--no-progress", "--out", str(tmp_path / "p")]
    monkeypatch.setattr(prune_checkpoint, "CHECKPOINT_SECONDS", 0.0)
    real, calls = pxprune.api.threshold, {"n": 0}

    def ctrl_c_in_round_3(*args, **kwargs):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(pxprune.api, "threshold", ctrl_c_in_round_3)
        assert main(argv) == 130
    capsys.readouterr()
    assert main(argv) == 0
    assert "resuming the pruning after round 2 of 4" in capsys.readouterr().out


def _drop(name: str):
    return lambda masks: {n: m for n, m in masks.items() if n != name}


@pytest.mark.parametrize("damage, says", [
    (_drop("5.weight"), "no mask for 1 of the model's 2 prunable tensors (e.g. '5.weight')"),
    (_drop("0.weight"), "no mask for 1 of the model's 2 prunable tensors (e.g. '0.weight')"),
    (lambda masks: {}, "no mask for 2 of the model's 2 prunable tensors"),
    (lambda masks: {n: torch.zeros_like(m) for n, m in masks.items()},
     "keeps 0 of 232 weights but prune.json records 116 of 232"),
    ("prune.json", "prune.json is unreadable or not a pruning record"),
])
def test_a_pruned_run_resumes_only_from_masks_that_match_the_model_and_prune_json(
        tmp_path, data_file, model_spec, monkeypatch, capsys, damage, says):
    """A layer missing from the saved masks would train dense; all-False masks would train
    nothing; either way a finished summary would be written for masks nobody chose."""
    out = tmp_path / "r"
    args = run_args(model_spec, data_file, out, "--holdout", "0.25")

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt  # pruned, not trained

    with monkeypatch.context() as m:
        m.setattr(pxprune.experiments.run, "train", ctrl_c)
        assert main(args) == 130
    assert (out / "masks.safetensors").exists() and not (out / "summary.json").exists()
    if damage == "prune.json":
        (out / "prune.json").write_text('{"kept": ')
    else:
        saved = Masks.load(out / "masks.safetensors")
        assert saved.kept == 116 and saved.total == 232  # magnitude 50 % of conv 216 + fc 16
        Masks(damage(dict(saved))).save(out / "masks.safetensors")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert not (out / "summary.json").exists()


def test_a_truncated_config_of_a_finished_run_is_one_line(tmp_path, data_file, model_spec,
                                                          capsys):
    out = tmp_path / "r"
    assert main(run_args(model_spec, data_file, out, "--holdout", "0.25")) == 0
    text = (out / "config.json").read_text()
    (out / "config.json").write_text(text[: len(text) // 2])
    capsys.readouterr()
    assert main(run_args(model_spec, data_file, out, "--holdout", "0.25")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0] and "unreadable" in err[0], err
    assert (out / "summary.json").is_file()  # nothing of the finished run was touched

"""The ``pxprune prune`` command: its outputs, and one clear line for every kind of bad input."""

from __future__ import annotations

import csv
import json
import sys
import textwrap

import numpy as np
import pytest
import torch

from pxprune import Masks
from pxprune.cli.main import main

PER_CLASS = 4


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    """A tiny .npz dataset: 10 classes x 4 random 32x32 RGB uint8 images."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    images = rng.integers(0, 256, size=(10 * PER_CLASS, 32, 32, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.repeat(np.arange(10), PER_CLASS))
    return str(path)


@pytest.fixture()
def factory_module(tmp_path, monkeypatch) -> str:
    """An importable module with model factories, as a user's ``module:function`` would be."""
    (tmp_path / "user_models.py").write_text(textwrap.dedent("""
        from torch import nn

        def small():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(4, 10))

        def nothing_prunable():
            return nn.Sequential(nn.Flatten(), nn.ReLU())

        def not_a_model():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_models", None)
    return "user_models"


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def prune_args(data_file: str, out, *extra: str) -> list[str]:
    return ["prune", "--data", data_file, "--per-class", "2", "--out", str(out),
            "--no-progress", "--device", "cpu", *extra]


def test_prune_writes_masks_config_and_table(data_file, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(prune_args(data_file, out, "--model", "resnet20", "--method", "px",
                                     "--sparsity", "98.2%", "--rounds", "3"), capsys)
    assert code == 0
    masks = Masks.load(out / "masks.safetensors")
    assert masks.kept == round(0.018 * masks.total)
    config = json.loads((out / "config.json").read_text())
    assert config["sparsity"] == pytest.approx(0.982)
    assert config["method"] == "px" and config["rounds"] == 3
    assert config["pruning_examples"] == 20
    rows = list(csv.DictReader((out / "layers.csv").open()))
    by_layer = {r["layer"]: r for r in rows}
    assert int(by_layer["fc.weight"]["kept"]) == int(masks["fc.weight"].sum())
    assert sum(int(by_layer[n]["kept"]) for n in masks) == masks.kept
    assert "layer1.0.conv1.weight" in stdout and "TOTAL" in stdout
    collapsed = [n for n in masks if int(masks[n].sum()) == 0]
    for name in collapsed:  # every collapsed layer is flagged in the printed table
        assert any(name in line and "COLLAPSED" in line for line in stdout.splitlines())


def test_prune_with_user_factory_and_weights(data_file, factory_module, tmp_path, capsys):
    torch.manual_seed(3)
    from user_models import small  # noqa: PLC0415 - created by the fixture

    weights = tmp_path / "w.pt"
    torch.save(small().state_dict(), weights)
    out = tmp_path / "run"
    code, _, _ = run(prune_args(data_file, out, "--model", f"{factory_module}:small",
                                "--weights", str(weights), "--method", "magnitude",
                                "--sparsity", "0.5"), capsys)
    assert code == 0
    masks = Masks.load(out / "masks.safetensors")
    state = torch.load(weights)
    kept_magnitudes = torch.cat([state[n][masks[n]].abs() for n in masks])
    dropped = torch.cat([state[n][~masks[n]].abs() for n in masks])
    assert kept_magnitudes.min() >= dropped.max()  # the loaded weights were the ones scored


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow",
                                    "synflow_l2", "ntksap"])
def test_every_foresight_method_runs_from_the_command(method, data_file, factory_module,
                                                       tmp_path, capsys):
    out = tmp_path / method
    code, _, err = run(prune_args(data_file, out, "--model", f"{factory_module}:small",
                                  "--method", method, "--sparsity", "0.8", "--rounds", "2"),
                       capsys)
    assert code == 0, err
    masks = Masks.load(out / "masks.safetensors")
    assert masks.kept == round(0.2 * masks.total)


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("sparsity, needle", [
    ("1.5", "sparsity"), ("1", "sparsity"), ("-0.1", "sparsity"), ("100%", "sparsity"),
    ("abc", "sparsity"), ("98.2%%", "sparsity"), ("nan", "sparsity"),
])
def test_bad_sparsity(sparsity, needle, data_file, tmp_path, capsys):
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--sparsity", sparsity), capsys)
    _one_line_error(code, err, needle)


def test_unknown_method_and_model(data_file, tmp_path, capsys):
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--method", "pxx"), capsys)
    _one_line_error(code, err, "pxx")
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--model", "resnet21"), capsys)
    _one_line_error(code, err, "resnet21")
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--model", "no_such_pkg:f"), capsys)
    _one_line_error(code, err, "no_such_pkg")


def test_factory_problems(data_file, factory_module, tmp_path, capsys):
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--model",
                                  f"{factory_module}:not_a_model"), capsys)
    _one_line_error(code, err, "not an nn.Module")
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--model",
                                  f"{factory_module}:nothing_prunable"), capsys)
    _one_line_error(code, err, "nothing prunable")
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--model",
                                  "no_such_user_pkg.models:build"), capsys)
    _one_line_error(code, err, "cannot import model factory", "PYTHONPATH",
                    "the folder that holds no_such_user_pkg.py")


def test_weights_that_do_not_match(data_file, factory_module, tmp_path, capsys):
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--weights", str(wrong)), capsys)
    _one_line_error(code, err, "does not match the model", "missing")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--weights", str(garbage)), capsys)
    _one_line_error(code, err, "cannot read weights")


def test_nan_in_the_model(data_file, factory_module, tmp_path, capsys):
    from user_models import small  # noqa: PLC0415

    state = small().state_dict()
    state["0.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--model", f"{factory_module}:small",
                                  "--weights", str(path), "--method", "snip"), capsys)
    _one_line_error(code, err, "0.weight")
    assert "nan" in err.lower() or "finite" in err.lower()


def test_data_problems(data_file, tmp_path, capsys):
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--per-class", "5"), capsys)
    _one_line_error(code, err, "5")  # only 4 images per class
    empty = tmp_path / "empty.npz"
    np.savez(empty, images=np.zeros((0, 32, 32, 3), np.uint8), labels=np.zeros(0, np.int64))
    code, _, err = run(prune_args(str(empty), tmp_path / "o"), capsys)
    _one_line_error(code, err)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run(prune_args(str(corrupt), tmp_path / "o"), capsys)
    _one_line_error(code, err, "corrupt.npz")
    code, _, err = run(prune_args(str(tmp_path / "missing.npz"), tmp_path / "o"), capsys)
    _one_line_error(code, err, "missing.npz")


@pytest.mark.parametrize("extra, needle", [
    (["--recipe", "nope"], "unknown recipe 'nope'"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--lr", "-1"], "lr must be positive"),
    (["--precision", "fp16"], "fp16 needs CUDA"),
])
def test_bad_training_request_fails_before_pruning(extra, needle, data_file, tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = run(["run", "--data", data_file, "--method", "px", "--sparsity", "0.9",
                        "--out", str(out), "--no-progress", "--device", "cpu", *extra], capsys)
    _one_line_error(code, err, needle)
    assert not out.exists()  # refused before the folder was claimed or a weight was scored


def test_argument_errors_are_one_line_naming_the_commands_help(data_file, tmp_path, capsys):
    for argv, needles in [
        (prune_args(data_file, tmp_path / "o", "--batch-size", "3"),
         ("pxprune prune: error: unrecognized arguments: --batch-size 3", "pxprune prune --help")),
        (["prune", "--method"], ("pxprune prune: error: argument --method",)),
        (["nope"], ("pxprune: error:", "invalid choice: 'nope'", "'pxprune --help'")),
        # an abbreviation is refused, not taken for the option it starts (--sparsity here)
        (["prune", "--data", data_file, "--method", "px", "--spars", "0.9", "--out",
          str(tmp_path / "a")], ("unrecognized arguments: --spars 0.9",)),
    ]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2
        assert len(err.strip().splitlines()) == 1, err
        for needle in needles:
            assert needle in err, err


# --- option values the parser's types let through: one line, nothing written ---------------

@pytest.mark.parametrize("command, extra, needle", [
    ("run", ["--lr", "nan"], "lr must be a finite number, got nan"),
    ("run", ["--lr", "inf"], "lr must be a finite number, got inf"),
    ("prune", ["--seed", "-1"], "seed must be in [0, 2**64)"),
    ("run", ["--seed", str(2**64)], "seed must be in [0, 2**64)"),
    ("prune", ["--device", "bogus"], "device 'bogus' is not a device name"),
    ("run", ["--device", "cpu:7"], "there is one CPU device"),
    ("prune", ["--num-classes", "0"], "--num-classes must be at least 1, got 0"),
    ("run", ["--rounds", "100000000", "--method", "synflow"],
     "rounds 100,000,000 is more than the 270,896 prunable weights"),
])
def test_bad_option_values_are_one_line_and_write_nothing(command, extra, needle, data_file,
                                                          tmp_path, capsys):
    out = tmp_path / "o"
    argv = ([command, "--data", data_file, "--method", "random", "--sparsity", "0.9",
             "--per-class", "2", "--no-progress", "--device", "cpu", "--out", str(out)]
            + (["--holdout", "0.5", "--epochs", "1"] if command == "run" else []) + extra)
    code, _, err = run(argv, capsys)
    _one_line_error(code, err, needle)
    assert not (out / "summary.json").exists() and not (out / "masks.safetensors").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(data_file, tmp_path, capsys):
    code, _, err = run(prune_args(data_file, tmp_path / "o", "--device", "cuda"), capsys)
    _one_line_error(code, err, "device 'cuda'", "use --device cpu")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--seeds", "0,0"], "--seeds names seed 0 more than once"),
    (["--seeds", "1,-1"], "seed must be in [0, 2**64)"),
    (["--methods", ""], "--methods '' names no method"),
    (["--methods", ",,"], "names no method"),
])
def test_sweep_grids_naming_no_method_or_a_seed_twice_are_refused(extra, needle, data_file,
                                                                  tmp_path, capsys):
    out = tmp_path / "sw"
    code, _, err = run(["sweep", "--dataset", data_file, "--holdout", "0.5", "--sparsities",
                        "0.5", "--epochs", "1", "--device", "cpu", "--no-progress", "--out",
                        str(out), *extra], capsys)
    _one_line_error(code, err, needle)
    assert not out.exists()


def test_the_api_checks_the_device_and_seed_of_a_run(tmp_path):
    from pxprune.errors import PxpruneError
    from pxprune.experiments.config import RunConfig
    from pxprune.experiments.run import run_experiment
    from pxprune.masks import PruningError

    with pytest.raises(PxpruneError, match="not a device name"):
        run_experiment(RunConfig(recipe="cpu_small"), tmp_path / "a", device="bogus")
    with pytest.raises(PruningError, match="seed must be in"):
        run_experiment(RunConfig(recipe="cpu_small", seed=-3), tmp_path / "b", device="cpu")
    with pytest.raises(PxpruneError, match="--out is empty"):
        run_experiment(RunConfig(recipe="cpu_small"), "", device="cpu")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

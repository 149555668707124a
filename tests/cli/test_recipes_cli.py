"""Recipes from the command line: what each does (`pxprune recipes`), weight decay and momentum
overridable, defaults in --help, and a summary that states the autocast dtype actually used."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pxprune.cli.main import build_parser, main
from pxprune.training.recipes import RECIPES


def test_recipes_lists_every_recipe_with_its_hyper_parameters(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:len(RECIPES) + 2]}
    assert set(rows) == set(RECIPES)
    for name, recipe in RECIPES.items():
        assert rows[name][1] == str(recipe.epochs) and float(rows[name][2]) == recipe.lr
        assert rows[name][-1] == str(recipe.batch_size)
        assert float(rows[name][-2]) == recipe.weight_decay
    assert "--weight-decay and --momentum override" in out


def test_help_states_defaults_once():
    text = " ".join(build_parser().commands["run"].format_help().split())
    assert "pruning split size per class (default: 10)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default: 0.982)") == 1


@pytest.fixture()
def data(tmp_path) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, images=rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8),
             labels=np.repeat(np.arange(4), 10))
    return str(path)


@pytest.mark.parametrize("precision,amp_dtype", [("fp32", None), ("bf16", "bfloat16")])
def test_weight_decay_momentum_overrides_and_the_dtype_in_the_summary(data, tmp_path, capsys,
                                                                      precision, amp_dtype):
    out = tmp_path / "r"
    assert main(["run", "--model", "resnet20", "--dataset", data, "--holdout", "0.25",
                 "--method", "magnitude", "--sparsity", "0.5", "--per-class", "2", "--epochs", "1",
                 "--batch-size", "15", "--weight-decay", "0.003", "--momentum", "0.5",
                 "--precision", precision, "--device", "cpu", "--no-progress",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"]["weight_decay"] == 0.003 and summary["recipe"]["momentum"] == 0.5
    assert summary["precision"] == precision and summary["recipe"]["amp_dtype"] == amp_dtype
    config = json.loads((out / "config.json").read_text())
    assert config["weight_decay"] == 0.003 and config["momentum"] == 0.5


def test_a_reader_that_leaves_early_is_not_an_error():
    """``pxprune recipes | head -1``: the pipe closes before pxprune writes; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "pxprune", "recipes"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the interpreter has even started
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and err == b""

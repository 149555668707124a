"""What a new user meets first: readable help, no escape codes in logs, hints that name the fix."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, SHARED_DATA

import pxprune
from pxprune.cli.main import main

SHARED = SHARED_DATA / "pretrained"


def help_text(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_is_plain_text_and_names_the_choices(capsys):
    top = help_text([], capsys)
    assert "``" not in top and "runs your" in top and "exit status 2" in top
    prune = help_text(["prune"], capsys)
    assert "name[key=value,...]" in prune and "px[variant=bound]" in prune
    assert "IMPORTS AND CALLS YOUR CODE" in " ".join(prune.split())
    run = " ".join(help_text(["run"], capsys).split())
    for needle in ("cpu_small", "cifar10_resnet20", "cifar100", "tinyimagenet", "--holdout",
                   "training epochs", "peak learning rate"):
        assert needle in run, needle


@pytest.fixture()
def tiny(tmp_path, monkeypatch) -> tuple[str, str]:
    (tmp_path / "newcomer_models.py").write_text(textwrap.dedent("""
        from torch import nn

        def tiny():
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("newcomer_models", None)
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, images=rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8),
             labels=np.repeat(np.arange(2), 8))
    return "newcomer_models:tiny", str(data)


def test_a_log_gets_one_line_per_epoch_and_no_progress_bars(tiny, tmp_path, capsys):
    model, data = tiny
    code = main(["run", "--model", model, "--dataset", data, "--holdout", "0.25", "--method",
                 "synflow", "--rounds", "3", "--sparsity", "0.5", "--per-class", "2",
                 "--epochs", "2", "--batch-size", "4", "--device", "cpu",
                 "--out", str(tmp_path / "r")])  # no --no-progress: stderr is not a terminal
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "\x1b[" not in out + err and "\r" not in err and "it/s" not in err
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 2
    assert "CPU thread(s)" in out


@pytest.mark.skipif(not (SHARED / "resnet20-12fca82f.th").exists(), reason="no shared weights")
def test_the_shared_resnet_weights_name_their_model(tiny, tmp_path, capsys):
    _, data = tiny
    code = main(["prune", "--model", "resnet20", "--weights", str(SHARED / "resnet20-12fca82f.th"),
                 "--data", data, "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "use --model resnet20_a" in err


def test_a_negative_sparsity_says_what_is_wrong(tmp_path, capsys):
    code = main(["prune", "--sparsity", "-1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "must be in [0, 1)" in err and "got -1.0" in err
    assert "not a number" not in err


def console_script_target() -> str:
    """The ``pxprune = "module:function"`` line of pyproject.toml's [project.scripts]."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    found = re.search(r'^pxprune\s*=\s*"([\w.]+):(\w+)"', section, re.M)
    assert found, section
    return f"{found[1]}:{found[2]}"


def test_the_console_script_names_the_cli_main_function():
    module, name = console_script_target().split(":")
    target = getattr(importlib.import_module(module), name)
    assert target is main  # not the package or a module: 'pxprune' must be callable


def test_the_installed_pxprune_command_runs(tmp_path):
    script = Path(sys.executable).parent / "pxprune"
    if not script.exists():
        pytest.skip("pxprune is not installed beside this python (pip install -e .)")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pxprune", pxprune.__version__]
    bad = subprocess.run([str(script), "prune", "--model", "resnet21", "--method", "px",
                          "--sparsity", "0.9", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr

"""One base class for every user-facing error; the CLI prints it as one line with exit 2."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from pxprune.cli.main import main
from pxprune.data import DataError, DatasetNotFoundError
from pxprune.errors import (
    DamagedFileError,
    DeviceError,
    FileFormatError,
    OutputError,
    PXNumericsError,
    PxpruneError,
    TrainingError,
)
from pxprune.experiments.resolve import UsageError
from pxprune.io import atomic_write_json, atomic_write_text
from pxprune.masks import PruningError
from pxprune.pathview import UnsupportedLayerError
from pxprune.transfer.backbones import BackboneLoadError


@pytest.mark.parametrize("cls", [PruningError, UsageError, DataError, DatasetNotFoundError,
                                 UnsupportedLayerError, BackboneLoadError, OutputError,
                                 DamagedFileError, DeviceError, FileFormatError, PXNumericsError,
                                 TrainingError])
def test_every_user_facing_error_derives_from_the_base(cls):
    assert issubclass(cls, PxpruneError)
    assert issubclass(cls, ValueError)  # code catching ValueError keeps working


def test_unsupported_layer_is_one_line_in_the_cli(tmp_path, monkeypatch, capsys):
    (tmp_path / "prelu_models.py").write_text(textwrap.dedent("""
        from torch import nn

        def prelu():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(4, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("prelu_models", None)
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, images=rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8),
             labels=np.repeat(np.arange(10), 2))
    code = main(["prune", "--data", str(data), "--per-class", "2", "--model",
                 "prelu_models:prelu", "--method", "synflow", "--rounds", "1",
                 "--out", str(tmp_path / "o"), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "prelu in module 1" in err
    assert "Traceback" not in err


def test_a_real_bug_keeps_its_traceback(monkeypatch):
    import pxprune.cli.main as cli

    def boom(args):
        raise ZeroDivisionError("a bug")

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), boom))
    with pytest.raises(ZeroDivisionError):
        main(["prune", "--out", "x"])


def _with_func(parser, func):
    parser.set_defaults(func=func)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(func=func)
    return parser


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    import errno
    import os

    path = tmp_path / "a.json"
    atomic_write_text(path, "old")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="no space left"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_a_value_json_cannot_hold_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"accuracy": 0.5})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"accuracy": object()})
    assert path.read_text() == '{\n  "accuracy": 0.5\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]

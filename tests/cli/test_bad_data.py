"""Data that does not fit the model is one line before any scoring, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pxprune.cli.main import main
from pxprune.data import DataError
from pxprune.errors import PxpruneError
from pxprune.experiments.checks import check_inputs
from pxprune.experiments.resolve import integer_labels, load_data_file


def npz(path, images, labels) -> str:
    np.savez(path, images=images, labels=labels)
    return str(path)


def images(n: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 8, 8, channels), dtype=np.uint8)


def prune(data: str, out, *extra: str) -> list[str]:
    return ["prune", "--data", data, "--model", "resnet20", "--per-class", "1", "--method",
            "magnitude", "--out", str(out), "--no-progress", "--device", "cpu", *extra]


@pytest.mark.parametrize("labels, needle", [
    (np.array([0.0, 1.5, 2.0, 1.0]), "1.5"),          # fractional: never truncated
    (np.array(["cat", "dog", "cat", "dog"]), "strings"),
    (np.array([0, -1, 1, 1]), ">= 0"),
])
def test_bad_labels_in_a_file(labels, needle, tmp_path, capsys):
    path = npz(tmp_path / "d.npz", images(4), labels)
    with pytest.raises(DataError, match=needle):
        load_data_file(path)
    code = main(prune(path, tmp_path / "o"))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err
    assert not (tmp_path / "o" / "config.json").exists()


def test_integral_float_labels_are_kept_exactly():
    assert integer_labels(np.array([0.0, 2.0, 1.0]), "x").tolist() == [0, 2, 1]


def test_labels_beyond_the_model_outputs(tmp_path, capsys):
    path = npz(tmp_path / "d.npz", images(12), np.repeat(np.arange(12), 1))
    code = main(prune(path, tmp_path / "o", "--num-classes", "10"))  # 12 classes, 10 outputs
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "labels go up to 11" in err and "10 outputs" in err


@pytest.mark.parametrize("channels", [1, 4])
def test_wrong_channel_count(channels, tmp_path, capsys):
    path = npz(tmp_path / "d.npz", images(4, channels), np.array([0, 1, 0, 1]))
    code = main(prune(path, tmp_path / "o"))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{channels} channel(s)" in err and "expects 3" in err


def test_check_inputs_on_a_meta_model():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(PxpruneError, match="'meta' device"):
        check_inputs(model, torch.zeros(2, 3, 3, 3), torch.tensor([0, 1]))


def test_check_inputs_accepts_fitting_data():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    check_inputs(model, torch.zeros(2, 3, 3, 3), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="integers"):
        check_inputs(model, torch.zeros(2, 3, 3, 3), torch.tensor([0.0, 1.0]))

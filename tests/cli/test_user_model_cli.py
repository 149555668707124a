"""A model the user wrote, from the command line: ``x.view`` flattening, several outputs
(``--output``), a factory that takes ``num_classes``."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from pxprune import Masks
from pxprune.cli.main import main


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    """10 classes x 4 random 16x16 RGB uint8 images."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("data") / "ten.npz"
    images = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.repeat(np.arange(10), 4))
    return str(path)


@pytest.fixture()
def user_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "my_cifar_models.py").write_text(textwrap.dedent("""
        import torch.nn.functional as F
        from torch import nn

        class TwoHeads(nn.Module):
            def __init__(self, num_classes=3):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
                self.bn = nn.BatchNorm2d(8)
                self.fc = nn.Linear(8 * 4 * 4, num_classes)
                self.aux = nn.Linear(8 * 4 * 4, num_classes)

            def forward(self, x):
                out = F.avg_pool2d(F.relu(self.bn(self.conv(x))), 4)
                out = out.view(out.size(0), -1)
                return self.fc(out), self.aux(out)

        def two_heads(num_classes=3):
            return TwoHeads(num_classes)

        class Plain(TwoHeads):
            def forward(self, x):
                return super().forward(x)[0]

        def plain_fixed():
            return Plain()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_cifar_models", None)
    return "my_cifar_models"


def _prune(data_file, out, *extra):
    return ["prune", "--dataset", data_file, "--per-class", "2", "--out", str(out),
            "--no-progress", "--device", "cpu", "--method", "px", "--sparsity", "0.8",
            "--rounds", "2", *extra]


def test_output_option_from_the_command_line(data_file, user_module, tmp_path, capsys):
    code = main(_prune(data_file, tmp_path / "a", "--model", f"{user_module}:two_heads"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--output" in err[0], err
    out = tmp_path / "b"
    code = main(_prune(data_file, out, "--model", f"{user_module}:two_heads", "--output", "0"))
    assert code == 0, capsys.readouterr().err
    masks = Masks.load(out / "masks.safetensors")
    assert masks.kept == round(0.2 * masks.total)
    assert masks["fc.weight"].shape == (10, 128)  # built with the dataset's 10 classes
    config = json.loads((out / "config.json").read_text())
    assert config["output"] == "0"


def test_factory_without_num_classes_is_called_bare(data_file, user_module, tmp_path, capsys):
    code = main(_prune(data_file, tmp_path / "c", "--model", f"{user_module}:plain_fixed"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "the model has 3 outputs" in err[0], err


def test_run_trains_a_two_headed_view_model(data_file, user_module, tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["run", "--dataset", data_file, "--holdout", "0.25", "--per-class", "2",
                 "--model", f"{user_module}:two_heads", "--output", "0", "--method", "px",
                 "--sparsity", "0.5", "--rounds", "2", "--epochs", "1", "--batch-size", "10",
                 "--precision", "bf16", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "fails on channels-last tensors" in capsys.readouterr().out  # bf16 would use it
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["final_test_acc"] <= 100.0
    assert summary["memory_format"] == "contiguous"  # the view model cannot take channels-last
    assert json.loads((out / "config.json").read_text())["output"] == "0"

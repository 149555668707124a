"""Keeping layers dense (a common protocol: the stem convolution and the classifier): out of
the masks and of the count, untouched, reported as kept dense."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

import pxprune
from pxprune.cli.main import main
from pxprune.errors import PxpruneError
from pxprune.models import get


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(20, 3, 8, 8, generator=g), torch.arange(20) % 10


@pytest.mark.parametrize("method", ["snip", "magnitude", "px"])
def test_kept_dense_layers_are_left_out_of_masks_and_count(method):
    model, (x, y) = _net(), _data()
    scores = pxprune.score(model, method, (x, y))
    first, last = model[0].weight.clone(), model[8].weight.clone()
    masks = pxprune.prune(model, method, 0.9, (x, y), rounds=1, progress=False,
                          keep_dense=("first", "last"))
    assert list(masks) == ["3.weight"]
    assert masks.kept == round(0.1 * 8 * 16 * 9)
    assert torch.equal(model[0].weight, first) and torch.equal(model[8].weight, last)
    top = scores["3.weight"].flatten().argsort(descending=True)[:masks.kept]
    want = torch.zeros(8 * 16 * 9, dtype=torch.bool)
    want[top] = True  # one round: the top scores of the pruned tensor alone
    assert torch.equal(masks["3.weight"].flatten(), want)


def test_module_and_parameter_names_and_bad_names():
    model, data = _net(), _data()
    assert list(pxprune.prune(model, "magnitude", 0.5, data, keep_dense="0,8.weight")) == [
        "3.weight"]
    with pytest.raises(PxpruneError, match="'fc' is not a prunable layer; choose 'first'"):
        pxprune.prune(_net(), "magnitude", 0.5, data, keep_dense=["fc"])
    with pytest.raises(PxpruneError, match="nothing is left to prune"):
        pxprune.prune(_net(), "magnitude", 0.5, data, keep_dense=["0", "3", "8"])
    with pytest.raises(PxpruneError, match="keep_dense must name layers"):
        pxprune.prune(_net(), "magnitude", 0.5, data, keep_dense=3)


@pytest.mark.integration
def test_command_line_records_and_reports_kept_dense_layers(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    data = tmp_path / "d.pt"
    torch.save({"images": torch.randint(0, 255, (20, 3, 8, 8), generator=g, dtype=torch.uint8),
                "labels": torch.arange(20) % 10}, data)
    out = tmp_path / "p"
    assert main(["prune", "--model", "resnet20", "--dataset", str(data), "--method", "snip",
                 "--sparsity", "0.9", "--per-class", "2", "--keep-dense", "first,last",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["keep_dense"] == "first,last"
    rows = {r["layer"]: r for r in csv.DictReader((out / "layers.csv").open())}
    assert rows["conv1.weight"]["warning"] == rows["fc.weight"]["warning"] == "KEPT DENSE (asked)"
    assert float(rows["fc.weight"]["density"]) == 1.0
    assert "KEPT DENSE" in capsys.readouterr().out
    meta = pxprune.Masks.metadata(out / "masks.safetensors")
    assert meta["method"] == "snip" and meta["seed"] == 0 and meta["model"] == "resnet20"
    assert meta["keep_dense"] == "first,last" and meta["sparsity"] == pytest.approx(0.9)
    order = [n for n, _ in get("resnet20").named_parameters()]
    loaded = list(pxprune.Masks.load(out / "masks.safetensors"))
    assert loaded == [n for n in order if n in loaded]  # parameter order, not alphabetical


def test_masks_files_load_in_the_order_they_were_saved(tmp_path):
    masks = pxprune.Masks({"z.weight": torch.ones(2, dtype=torch.bool),
                           "a.weight": torch.tensor([True, False])})
    masks.save(tmp_path / "m.safetensors", {"method": "px", "seed": 3})
    assert list(pxprune.Masks.load(tmp_path / "m.safetensors")) == ["z.weight", "a.weight"]
    assert pxprune.Masks.metadata(tmp_path / "m.safetensors") == {"method": "px", "seed": 3}

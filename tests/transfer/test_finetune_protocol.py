"""Issue 23: the fine-tuning recipe of ``--mode finetune``, ``--precision auto`` per model, and
the flag on a cell whose new classifier was emptied."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import SHARED_DATA
from torch import nn

from pxprune import models
from pxprune.cli.main import main
from pxprune.data import ImageDataset
from pxprune.experiments.config import TransferConfig
from pxprune.experiments.transfer_run import classifier_block, recipe_of
from pxprune.masks import Masks
from pxprune.training import precision as P
from pxprune.training.recipes import FINETUNE_RECIPE, Recipe
from pxprune.training.train import train
from pxprune.transfer.features import prepare_inputs
from pxprune.transfer.finetune import recalibrate_batchnorm

DATA = SHARED_DATA
R20 = sorted((DATA / "pretrained").glob("resnet20-*.th"))
needs_data = pytest.mark.skipif(not R20 or not (DATA / "cifar10-jpeg.tar.gz").exists(),
                                reason=f"needs resnet20 weights and CIFAR JPEG under {DATA}")


def test_finetune_mode_uses_the_finetune_recipe_unless_one_is_given():
    cfg = TransferConfig(backbone="efficientnet_lite0", mode="finetune")
    assert cfg.recipe == FINETUNE_RECIPE == "finetune_cpu"
    rec = recipe_of(cfg)
    assert (rec.lr, rec.epochs, rec.batch_size, rec.schedule) == (0.02, 2, 64, "onecycle")
    assert rec.precision == "auto" and rec.onecycle_pct_start == 0.15
    assert TransferConfig(backbone="resnet20_a", mode="probe").recipe == "cpu_small"
    given = TransferConfig(backbone="resnet20_a", mode="finetune", recipe="cpu_small")
    assert recipe_of(given).lr == 0.2  # --recipe wins
    # a config.json written before the change reads back as it was
    old = TransferConfig.from_dict({"backbone": "resnet20_a", "mode": "finetune",
                                    "recipe": "cpu_small"})
    assert old.recipe == "cpu_small"


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Pretend the CPU has native bf16 (the rule is what is tested, not this machine)."""
    monkeypatch.setattr(P, "_cpu_has_bf16_cached", lambda: True)


def test_auto_is_fp32_for_depthwise_models_and_bf16_otherwise(bf16_cpu):
    cpu = torch.device("cpu")
    lite = models.get("efficientnet_lite0", num_classes=10)
    assert len(P.depthwise_convs(lite)) == 16  # Lite0's 16 MBConv depthwise convolutions
    prec, why = P.precision_choice("auto", cpu, model=lite)
    assert prec == "fp32" and "16 depthwise" in why
    for name in ("resnet20", "resnet56"):
        prec, why = P.precision_choice("auto", cpu, model=models.get(name, num_classes=10))
        assert (prec, P.depthwise_convs(models.get(name))) == ("bf16", [])
        assert "no depthwise" in why
    assert P.resolve_precision("auto", cpu, model=lite) == "fp32"
    assert P.precision_choice("bf16", cpu, model=lite) == ("bf16", "bf16 requested")


def test_auto_is_fp32_everywhere_without_native_bf16(monkeypatch):
    monkeypatch.setattr(P, "_cpu_has_bf16_cached", lambda: False)
    prec, why = P.precision_choice("auto", torch.device("cpu"), model=models.get("resnet20"))
    assert prec == "fp32" and "without native bf16" in why


def _tiny(depthwise: bool) -> nn.Module:
    groups = 4 if depthwise else 1
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, groups=groups), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize(("depthwise", "expected"), [(True, "fp32"), (False, "bf16")])
def test_training_summary_records_auto_choice_and_reason(tmp_path, bf16_cpu, depthwise,
                                                         expected):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=g)
    ds = ImageDataset(images, torch.arange(16) % 2, ["a", "b"], (0.5,) * 3, (0.25,) * 3, "tiny")
    rec = Recipe(epochs=1, batch_size=8, schedule="constant", milestones=(), lr=0.01)
    torch.manual_seed(0)
    summary = train(_tiny(depthwise), None, ds, ds, rec, out_dir=tmp_path, progress=False,
                    log=None)
    assert summary["precision"] == expected
    assert ("depthwise" in summary["precision_reason"]) and (
        ("no depthwise" in summary["precision_reason"]) is not depthwise)


def test_classifier_block_flags_an_emptied_head():
    model = models.get("resnet20", num_classes=10)
    masks = Masks.ones(model)
    ok = classifier_block(model, masks, "random")
    assert (ok["name"], ok["kept"], ok["total"], ok["emptied"]) == ("fc.weight", 640, 640,
                                                                    False)
    masks = Masks({**masks, "fc.weight": torch.zeros(10, 64, dtype=torch.bool)})
    gone = classifier_block(model, masks, "probe")
    assert (gone["kept"], gone["emptied"]) == (0, True)
    assert "scored and pruned like every other layer" in gone["while_scoring"]


@needs_data
def test_magnitude_with_the_random_head_empties_the_classifier_and_is_flagged(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PXPRUNE_DATA", str(DATA))
    out = tmp_path / "mag"
    rc = main(["transfer", "--backbone", "resnet20_a", "--method", "magnitude", "--sparsity",
               "0.9", "--head", "random", "--mode", "finetune", "--epochs", "1",
               "--no-dense-finetune", "--dataset", "cifar10", "--train-per-class", "5",
               "--test-per-class", "5", "--no-progress", "--out", str(out)])
    assert rc == 0
    assert "WARNING: magnitude at 90.00% (seed 0) emptied the new classifier linear.weight " \
           "(0 of 640 weights kept)" in capsys.readouterr().out
    res = json.loads((out / "summary.json").read_text())
    assert res["classifier_emptied"] is True and res["head"] == "random"
    assert (res["classifier"]["kept"], res["classifier"]["total"]) == (0, 640)
    assert res["pruned"]["test_acc"] == 10.0  # an empty head: chance on the 50 test images
    assert json.loads((out / "config.json").read_text())["recipe"] == "finetune_cpu"
    ft = res["pruned"]["finetune"]
    assert ft["precision"] in ("bf16", "fp32") and ft["precision_reason"].startswith("auto")


def test_recalibrate_batchnorm_recomputes_running_statistics_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 2))
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    ds = ImageDataset(images, torch.arange(40) % 2, ["a", "b"], (0.5,) * 3, (0.25,) * 3, "tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()
              if "running" not in k and "num_batches" not in k}
    n = recalibrate_batchnorm(model.eval(), ds, images=32, seed=1, batch_size=8)
    assert n == 32 and not model.training and model[1].momentum == 0.1
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(1))[:32].sort().values
    with torch.no_grad():
        z = model[0](prepare_inputs(images[idx], ds.mean, ds.std))
    torch.testing.assert_close(model[1].running_mean, z.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    for k, v in before.items():  # weights untouched
        assert torch.equal(model.state_dict()[k], v), k

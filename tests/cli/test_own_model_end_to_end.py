"""A model the user wrote (MobileNetV2-style, PyTorch's default init, ``x.view`` flattening)
taken through prune -> run --masks -> report -> ntk -> transfer on the command line, and the same
masks from the Python API trained by ``pxprune run --masks``."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA
from safetensors.torch import save_file

import pxprune
from pxprune import Masks
from pxprune.cli.main import main
from pxprune.training.train import masks_fingerprint

MODEL = textwrap.dedent('''
    import torch.nn.functional as F
    from torch import nn

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            self.use_res = stride == 1 and cin == cout
            self.conv = nn.Sequential(
                nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(True),
                nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                nn.BatchNorm2d(hidden), nn.ReLU6(True),
                nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(16), nn.ReLU6(True))
            self.blocks = nn.Sequential(InvertedResidual(16, 16, 1, 1),
                                        InvertedResidual(16, 24, 2, 6),
                                        InvertedResidual(24, 24, 1, 6))
            self.classifier = nn.Linear(24 * 2 * 2, num_classes)

        def forward(self, x):
            x = F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 2)
            x = x.view(x.size(0), -1)
            return self.classifier(x)

    def mobilenetv2(num_classes=10):
        return MobileNetV2(num_classes)
''')


@pytest.fixture()
def user_model(tmp_path, monkeypatch) -> str:
    (tmp_path / "my_mobilenet.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_mobilenet", None)
    return "my_mobilenet:mobilenetv2"


def _dataset(path, classes: int = 10, seed: int = 0) -> str:
    """8 images per class, 16x16, whose brightness grows with the class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), 8)
    images = rng.integers(0, 120, (8 * classes, 16, 16, 3)) + 12 * labels[:, None, None, None]
    np.savez(path, images=images.astype(np.uint8), labels=labels)
    return str(path)


@pytest.fixture()
def data(tmp_path) -> str:
    return _dataset(tmp_path / "tiny.npz")


def _run(out, data, model, masks, *extra):
    return main(["run", "--model", model, "--dataset", data, "--holdout", "0.25", "--masks",
                 str(masks), "--epochs", "1", "--batch-size", "20", "--device", "cpu",
                 "--no-progress", "--out", str(out), *extra])


def _transfer(out, data, backbone, *extra):
    return main(["transfer", "--backbone", backbone, "--dataset", data, "--holdout", "0.25",
                 "--train-per-class", "0", "--test-per-class", "0", "--method", "px",
                 "--sparsity", "0.8", "--rounds", "2",
                 "--per-class", "2", "--device", "cpu", "--no-progress", "--out", str(out),
                 *extra])


def test_prune_run_masks_report_ntk_on_the_users_model(user_model, data, tmp_path, capsys,
                                                      monkeypatch):
    pruned, trained = tmp_path / "pruned", tmp_path / "runs" / "px"
    assert main(["prune", "--model", user_model, "--dataset", data, "--method", "px",
                 "--sparsity", "0.9", "--rounds", "3", "--per-class", "2", "--keep-dense",
                 "first,last", "--device", "cpu", "--no-progress", "--out", str(pruned)]) == 0
    masks = Masks.load(pruned / "masks.safetensors")
    assert "stem.0.weight" not in masks and "classifier.weight" not in masks
    capsys.readouterr()

    assert _run(trained, data, user_model, pruned) == 0  # the prune folder, not pruned again
    out = capsys.readouterr().out
    assert "px rounds" not in out
    config = json.loads((trained / "config.json").read_text())
    assert config["method"] == "px" and config["masks_sha256"] == masks_fingerprint(masks)
    assert config["sparsity"] == pytest.approx(1 - masks.kept / masks.total)
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["kept_params"] == masks.kept and summary["epochs"] == 1
    assert all(torch.equal(m, masks[n]) for n, m in
               Masks.load(trained / "masks.safetensors").items())
    model = torch.load(trained / "model.pt", weights_only=True)
    assert all(int((model[n] != 0).sum()) <= int(masks[n].sum()) for n in masks)

    # the same folder with other masks is another configuration: refused, nothing changed
    other = tmp_path / "other.safetensors"
    Masks({n: ~m if n == "blocks.0.conv.0.weight" else m for n, m in masks.items()}).save(other)
    assert _run(trained, data, user_model, other) == 2
    assert "another configuration" in capsys.readouterr().err

    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["methods"] == ["px"] and report["cells"][0]["final_test_acc"] is not None
    assert report["model"] == user_model and report["torch"] == torch.__version__
    assert report["protocol"]["epochs"] == 1 and report["device"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "model my_mobilenet:mobilenetv2" in text and "unknown" not in text

    monkeypatch.setenv("PXPRUNE_DATA", str(SHARED_DATA))
    assert main(["ntk", "--model", user_model, "--dataset", "cifar10", "--methods", "magnitude",
                 "--sparsities", "0.5,0.98", "--n-images", "10", "--per-class", "1", "--top-k", "3",
                 "--no-plots", "--no-progress", "--out", str(tmp_path / "ntk")]) == 0
    study = json.loads((tmp_path / "ntk" / "ntk.json").read_text())
    assert 0 < study["cells"]["magnitude@50.0000"]["trace_ratio"] < 1
    # magnitude empties a layer of this default-init model at 98 %: said, not hidden
    assert study["cells"]["magnitude@98.0000"]["trace"] == 0.0
    assert "magnitude@98.0000" in study["warnings"][0]
    assert "trace of exactly 0" in capsys.readouterr().err

    # the trained model is the pre-trained backbone of another task (5 classes): its weights
    # loaded strictly, its classifier found and replaced, pruned, probed and fine-tuned
    down = _dataset(tmp_path / "down.npz", classes=5, seed=1)
    for mode, extra in (("probe", ()), ("finetune", ("--epochs", "1", "--batch-size", "20",
                                                      "--no-dense-finetune"))):
        out = tmp_path / "transfer" / mode
        assert _transfer(out, down, user_model, "--weights", str(trained / "model.pt"),
                         "--mode", mode, *extra) == 0
        config = json.loads((out / "config.json").read_text())
        assert (config["backbone"], config["weights"]) == (user_model, str(trained / "model.pt"))
        assert config["num_classes"] == 5 and config["classifier"] is None
        result = json.loads((out / "summary.json").read_text())
        assert result["classifier"]["name"] == "classifier.weight"
        assert result["classifier"]["total"] == 5 * 96  # the new task's head, pruned with the rest
        assert Masks.load(out / "masks.safetensors").density() == pytest.approx(0.2, abs=0.01)
        assert result["dense"]["test_acc"] is not None and result["pruned"]["test_acc"] is not None
    assert result["pruned"]["finetune"]["epochs"] == 1
    tuned = torch.load(out / "finetune" / "model.pt", weights_only=True)
    masks = Masks.load(out / "masks.safetensors")
    assert all(int((tuned[n] != 0).sum()) <= int(m.sum()) for n, m in masks.items())


def test_masks_from_the_python_api_train_on_the_command_line(user_model, data, tmp_path,
                                                            capsys):
    from my_mobilenet import mobilenetv2  # noqa: PLC0415 - written by the fixture

    torch.manual_seed(0)
    model = mobilenetv2()
    x, y = torch.randn(20, 3, 16, 16), torch.arange(20) % 10
    masks = pxprune.prune(model, "snip", 0.8, (x, y))
    masks.save(tmp_path / "m.safetensors")  # no metadata: the run says "masks"
    out = tmp_path / "r"
    assert _run(out, data, user_model, tmp_path / "m.safetensors") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "masks" and config["sparsity"] == pytest.approx(0.8, abs=1e-4)
    cut = {n: torch.zeros_like(m) if n == "classifier.weight" else m for n, m in masks.items()}
    Masks(cut).save(tmp_path / "cut.safetensors")
    capsys.readouterr()
    assert _run(tmp_path / "r2", data, user_model, tmp_path / "cut.safetensors") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disconnect the output" in err[0] and "classifier.weight" in err[0]
    wrong = {**masks, "nope.weight": torch.ones(3, dtype=torch.bool)}
    Masks(wrong).save(tmp_path / "wrong.safetensors")
    assert _run(tmp_path / "r3", data, user_model, tmp_path / "wrong.safetensors") == 2
    assert "does not fit the model" in capsys.readouterr().err


def test_transfer_of_a_user_backbone_refuses_in_one_line(user_model, data, tmp_path, capsys):
    (tmp_path / "conv_head.py").write_text(textwrap.dedent('''
        from torch import nn

        def net(num_classes=10):  # a 1x1-conv classifier: no nn.Linear gives the logits
            return nn.Sequential(nn.Conv2d(3, num_classes, 1), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten())
    '''))
    sys.modules.pop("conv_head", None)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"stem.0.weight": torch.zeros(16, 3, 5, 5), "extra.weight": torch.zeros(2)},
              str(wrong))
    cases = [
        ("no_such_pkg.models:net", (), "cannot import model factory 'no_such_pkg.models:net'"),
        ("my_mobilenet:nothing", (), "has no attribute 'nothing'"),
        ("conv_head:net", (), "Sequential has no nn.Linear layer to use as the classifier"),
        (user_model, ("--classifier", "blocks.0.conv.0"),
         "classifier 'blocks.0.conv.0' of MobileNetV2 is a Conv2d, not an nn.Linear"),
        (user_model, ("--classifier", "head"),
         "MobileNetV2 has no module 'head' (its nn.Linear layers: classifier)"),
        ("my_mobilenet.mobilenetv2", (), "unknown backbone 'my_mobilenet.mobilenetv2'"),
        ("resnet20_a", ("--classifier", "linear"),
         "--classifier names the classifier of your own backbone"),
    ]
    for i, (backbone, extra, expected) in enumerate(cases):
        out = tmp_path / f"refused{i}"
        assert _transfer(out, data, backbone, *extra) == 2, backbone
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (backbone, err)
        assert not out.exists()
    assert _transfer(tmp_path / "w", data, user_model, "--weights", str(wrong)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match the model MobileNetV2: missing keys" in err[0]
    assert "unexpected keys ['extra.weight']" in err[0]
    assert "'stem.0.weight: file (16, 3, 5, 5) vs model (16, 3, 3, 3)'" in err[0]
    # one data file and no test split: the probe would be tested on the images it was fitted on
    args = ["transfer", "--backbone", user_model, "--dataset", data, "--method", "random",
            "--sparsity", "0.5", "--device", "cpu", "--out", str(tmp_path / "same")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give a test file (--test-dataset FILE) or hold out" in err[0]
    assert not (tmp_path / "same").exists()


def test_a_transfer_sweep_takes_a_user_backbone(user_model, data, tmp_path):
    out = tmp_path / "sweep"
    assert main(["sweep", "--transfer", "--backbone", user_model, "--classifier", "classifier",
                 "--dataset", data, "--holdout", "0.25", "--train-per-class", "0",
                 "--test-per-class", "0",
                 "--methods", "px", "--sparsities", "0.8", "--seeds", "0", "--rounds", "2",
                 "--per-class", "2", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["protocol"]["backbone"] == user_model
    assert record["protocol"]["classifier"] == "classifier"
    result = json.loads((out / "px" / "s80.00" / "seed0" / "summary.json").read_text())
    assert result["classifier"]["name"] == "classifier.weight" and result["density"] < 0.21
    probe = result["dense"]["probe"]  # a quarter of the file held out, never fitted on
    assert probe["num_test"] * 3 == probe["num_train"]

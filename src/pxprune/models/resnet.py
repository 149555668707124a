"""torchvision-style ResNets: ImageNet ResNet-50 and a 64-pixel Tiny-ImageNet ResNet-18.

Module and parameter names are torchvision's (``conv1``, ``bn1``, ``layer{1..4}.{i}.conv1``,
``...downsample.0/1``, ``fc``), so torchvision state_dicts load unchanged. Bottlenecks put the
stride on the 3x3 conv (ResNet v1.5, as torchvision). Init as torchvision: ``kaiming_normal_``
with mode ``fan_out`` and ReLU gain on convs, BN weight 1 and bias 0, default Linear init.

``resnet18_tiny`` swaps the 7x7 stride-2 stem and the max-pool for a 3x3 stride-1 conv and no
pooling (``maxpool`` is an nn.Identity), the usual choice for 64x64 Tiny-ImageNet images and the
PX code's; the feature map entering ``layer1`` is then 64x64, and 8x8 before the average pool.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import kaiming_init


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1 conv-BN ``downsample`` shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual forward pass."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, each with BN; ReLU after the sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual forward pass."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    """1x1 conv + BN shortcut when the shape changes, else None (identity)."""
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes)
    )


class ResNet(nn.Module):
    """torchvision ResNet with the ImageNet stem (7x7/2 + max-pool) or a small one (3x3/1)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        small_stem: bool = False,
    ) -> None:
        super().__init__()
        self.inplanes = 64
        if small_stem:
            self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.Identity() if small_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        kaiming_init(self, (nn.Conv2d,), mode="fan_out", nonlinearity="relu")

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        """One stage: a (possibly strided) first block, then ``blocks - 1`` plain ones."""
        mods = [block(self.inplanes, planes, stride)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images (N, 3, H, W)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes: int = 1000) -> ResNet:
    """ImageNet ResNet-50 with torchvision's exact parameter and buffer names."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


def resnet18_tiny(num_classes: int = 200) -> ResNet:
    """ResNet-18 for 64x64 Tiny-ImageNet: 3x3 stride-1 stem, no max-pool."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, small_stem=True)

"""VGG-11/13/16/19 with BatchNorm for CIFAR-sized inputs, as in the PX paper's (open_lth) code.

``features`` holds conv3x3 (with bias, as the reference) + BN + ReLU, and an nn.MaxPool2d(2)
between the five stages (four pools, none after the last stage). The head is a global average
pool (2x2 -> 1x1 at 32 px, so the same as the reference's AvgPool2d(2); adaptive so that 64 px
inputs work too) followed by ``fc`` = Linear(512, num_classes). Init as the reference:
``kaiming_normal_`` (fan_in) on conv and linear weights, default biases, BN weight 1, bias 0.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import kaiming_init

# fmt: off
PLANS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512],
}
# fmt: on


class VGG(nn.Module):
    """CIFAR VGG-BN: ``features`` (Sequential of conv/BN/ReLU/max-pool), ``avgpool``, ``fc``."""

    def __init__(self, depth: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        if depth not in PLANS:
            raise ValueError(f"VGG depth must be one of {sorted(PLANS)}, got {depth}")
        layers: list[nn.Module] = []
        channels = 3
        for spec in PLANS[depth]:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [
                    nn.Conv2d(channels, int(spec), 3, padding=1, bias=True),
                    nn.BatchNorm2d(int(spec)),
                    nn.ReLU(inplace=True),
                ]
                channels = int(spec)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        kaiming_init(self, (nn.Conv2d, nn.Linear))  # kaiming_normal_ defaults

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images (N, 3, H, W), H and W multiples of 16."""
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg_bn(depth: int, num_classes: int = 10) -> VGG:
    """Build a CIFAR VGG-{11,13,16,19} with BatchNorm."""
    return VGG(depth, num_classes)

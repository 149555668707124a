"""CIFAR ResNets (He et al. 2016, Sec. 4.2): ResNet-20/32/44/56 with two shortcut options.

Parameter names follow torchvision / Y. Idelbayev's CIFAR code: ``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``. The two variants differ only in the downsampling
shortcut and the classifier's name:

* ``shortcut="conv"`` (``resnet20`` ...; the PX paper's code, an open_lth ResNet): a 1x1 stride-2
  conv + BN (``layer{2,3}.0.shortcut.0`` / ``.1``), classifier ``fc``. The PX code names the stem
  ``conv``/``bn`` and the blocks ``blocks.{k}``; the architecture is the same.
* ``shortcut="pad"`` ("option A", ``resnet20_a`` ...; Idelbayev's pre-trained files): stride-2
  subsampling plus zero channel padding, no parameters, classifier ``linear``.

Initialisation follows both reference codes: ``kaiming_normal_`` with its defaults
(mode ``fan_in``, gain sqrt(2)) on every Conv2d and Linear weight, PyTorch's default uniform
init for the Linear bias, BatchNorm weight 1 and bias 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PxpruneError
from ..io import load_tensors
from .init import kaiming_init

DEPTHS = (20, 32, 44, 56)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad channels, so the shortcut has no weights."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        extra = out_planes - in_planes
        self.pad_lo = extra // 2
        self.pad_hi = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x[:, :, ::2, ::2] with zero channels added on both sides."""
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_lo, self.pad_hi))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; ReLU after the first BN and after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "conv"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Sequential()
        elif shortcut == "pad":
            self.shortcut = PadShortcut(in_planes, planes)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual forward pass."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels, global average pool, linear head."""

    def __init__(self, depth: int = 20, num_classes: int = 10, shortcut: str = "conv") -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("conv", "pad"):
            raise ValueError(f"shortcut must be 'conv' or 'pad', got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier_name = "linear" if shortcut == "pad" else "fc"
        setattr(self, self.classifier_name, nn.Linear(64, num_classes))
        kaiming_init(self, (nn.Conv2d, nn.Linear))  # kaiming_normal_ defaults

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images (N, 3, H, W)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return getattr(self, self.classifier_name)(out)


def cifar_resnet(depth: int, num_classes: int = 10, shortcut: str = "conv") -> CifarResNet:
    """Build a CIFAR ResNet of the given depth (20, 32, 44, 56, ...) and shortcut option."""
    return CifarResNet(depth, num_classes, shortcut)


def _strip_module(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that nn.DataParallel adds to every key."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_cifar_pretrained(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an Idelbayev CIFAR ResNet ``.th`` file into ``model`` strictly and return it.

    The ``module.`` prefix is stripped. The files predate ``num_batches_tracked``, so only those
    buffers may be absent (they are left as they are); any other missing or unexpected key, or a
    shape mismatch, raises PxpruneError (a ValueError) listing the offending keys.
    """
    ckpt = load_tensors(path, "pre-trained weights")  # weights_only: never unpickles code
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else ckpt
    state = _strip_module(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        raise PxpruneError(
            f"checkpoint {path} does not match {type(model).__name__}: "
            f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {wrong}"
        )
    model.load_state_dict(state, strict=False)
    return model


def cifar_pretrained_file(depth: int, root: Path) -> Path:
    """The shared pre-trained file ``resnet{depth}-*.th`` under ``root/pretrained``."""
    folder = Path(root) / "pretrained"
    found = sorted(folder.glob(f"resnet{depth}-*.th"))
    if not found:
        raise FileNotFoundError(f"no pre-trained file resnet{depth}-*.th under {folder} "
                                "(set PXPRUNE_DATA to the folder holding pretrained/)")
    return found[0]

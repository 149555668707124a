"""Model zoo for pruning experiments: plain nn.Modules built by name with :func:`get`.

CIFAR ResNet-20/32/44/56 (1x1-conv shortcuts as the PX code, or ``_a``: option A, loading the
Idelbayev pre-trained files), CIFAR VGG-11/13/16/19-BN, Tiny-ImageNet ResNet-18, ImageNet
ResNet-50 (torchvision names) and EfficientNet-Lite0 (lukemelas names, ImageNet weights).
Weights go into any model through one strict loader (:mod:`pxprune.models.weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch import nn

from ..data.dataset import IMAGENET_MEAN, IMAGENET_STD
from .cifar_resnet import (
    CifarResNet,
    PadShortcut,
    cifar_pretrained_file,
    cifar_resnet,
    load_cifar_pretrained,
)
from .efficientnet import (
    EfficientNetLite,
    SamePad2d,
    default_lite0_weights,
    efficientnet_lite0,
    lite_normalize,
    load_efficientnet_lite0,
)
from .resnet import ResNet, resnet18_tiny, resnet50
from .vgg import VGG, vgg_bn
from .weights import load_state_dict_strictly, read_state_dict

# Normalisation (on [0, 1] pixels) that EfficientNet-Lite's TF weights expect:
# (255 x - 127) / 128 == (x - 127/255) / (128/255)
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class ModelInfo:
    """A model's builder and what its pre-trained weights expect: a new backbone is one entry
    here (and its file), and pruning, training and transfer read everything from it."""

    build: Callable[..., nn.Module]
    mean: tuple[float, ...] = IMAGENET_MEAN  # input normalisation of its pre-trained weights
    std: tuple[float, ...] = IMAGENET_STD
    native_size: int | None = None  # input side of its pre-trained weights (None: the data's)
    # the default pre-trained file, given the shared data folder (None: weights must be given)
    weights: Callable[[Path], Path] | None = None


MODELS: dict[str, ModelInfo] = {}
for _d in (20, 32, 44, 56):
    MODELS[f"resnet{_d}"] = ModelInfo(partial(cifar_resnet, _d, shortcut="conv"))
for _d in (20, 32, 44, 56):  # Idelbayev's CIFAR-10 files, trained with ImageNet statistics
    MODELS[f"resnet{_d}_a"] = ModelInfo(partial(cifar_resnet, _d, shortcut="pad"),
                                        weights=partial(cifar_pretrained_file, _d))
for _d in (11, 13, 16, 19):
    MODELS[f"vgg{_d}_bn"] = ModelInfo(partial(vgg_bn, _d))
MODELS["resnet18_tiny"] = ModelInfo(resnet18_tiny)
MODELS["resnet50"] = ModelInfo(resnet50, native_size=224)
MODELS["efficientnet_lite0"] = ModelInfo(efficientnet_lite0, LITE_MEAN, LITE_STD, 224,
                                         weights=lambda _root: default_lite0_weights())

NAMES: list[str] = list(MODELS)


def info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` registered as ``name``; a ValueError listing the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(NAMES)}") from None


def get(name: str, num_classes: int = 10, **kwargs: object) -> nn.Module:
    """Build a freshly initialised model by name (see ``NAMES``); extra kwargs go to the builder."""
    return info(name).build(num_classes=num_classes, **kwargs)


__all__ = [
    "CifarResNet",
    "EfficientNetLite",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE_MEAN",
    "LITE_STD",
    "MODELS",
    "ModelInfo",
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
    "load_state_dict_strictly",
    "read_state_dict",
    "resnet18_tiny",
    "resnet50",
    "vgg_bn",
]

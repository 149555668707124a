"""Registry of pruning scores: each method module registers ``score(model, batches, masks)``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

ScoreFn = Callable[..., dict[str, Tensor]]


@dataclass(frozen=True)
class Method:
    """A registered score: whether it needs data or labels, and its default number of rounds."""

    name: str
    score: ScoreFn
    needs_data: bool
    needs_labels: bool
    default_rounds: int


REGISTRY: dict[str, Method] = {}


def register(name: str, *, needs_data: bool, needs_labels: bool = False, default_rounds: int = 1):
    """Decorator adding ``score(model, batches, masks, *, seed, **options)`` to the registry."""

    def deco(fn: ScoreFn) -> ScoreFn:
        REGISTRY[name] = Method(name, fn, needs_data, needs_labels, default_rounds)
        return fn

    return deco


# One module per method; importing it registers the method.
_MODULES = ("px", "random_", "magnitude", "snip", "grasp", "synflow", "ntksap", "imp")
for _module in _MODULES:
    importlib.import_module(f"{__name__}.{_module}")

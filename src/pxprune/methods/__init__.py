"""Registry of pruning scores: each method module registers ``score(model, batches, masks)``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

ScoreFn = Callable[..., dict[str, Tensor]]


@dataclass(frozen=True)
class Method:
    """A registered score and what the rest of the product needs to know about it.

    ``display_name`` and ``color`` are what reports and figures show; ``trains`` marks methods
    that train while pruning (they run as a pipeline cell, not as a score); ``resolve`` writes
    out the defaults that give a bare name its meaning (``px`` -> ``px[variant=cvpr2024]``), so
    that a run folder records what was computed even when a default later changes.
    """

    name: str
    score: ScoreFn
    needs_data: bool
    needs_labels: bool
    default_rounds: int
    display_name: str = ""
    color: str | None = None
    trains: bool = False
    resolve: Callable[[dict, bool], dict] | None = None
    check: Callable[[dict], None] | None = None

    def check_values(self, options: dict) -> None:
        """Raise for an option value the method does not take (before any scoring starts)."""
        if self.check is not None:
            self.check(options)

    def resolved_options(self, options: dict, legacy: bool = False) -> dict:
        """``options`` with the defaults that define the method written out; ``legacy``: as they
        were before the last change of a default (for folders that recorded no resolution)."""
        return dict(options) if self.resolve is None else self.resolve(dict(options), legacy)


REGISTRY: dict[str, Method] = {}


def register(name: str, *, needs_data: bool, needs_labels: bool = False, default_rounds: int = 1,
             display_name: str | None = None, color: str | None = None, trains: bool = False,
             resolve: Callable[[dict, bool], dict] | None = None,
             check: Callable[[dict], None] | None = None):
    """Decorator adding ``score(model, batches, masks, *, seed, **options)`` to the registry."""

    def deco(fn: ScoreFn) -> ScoreFn:
        REGISTRY[name] = Method(name, fn, needs_data, needs_labels, default_rounds,
                                display_name or name, color, trains, resolve, check)
        return fn

    return deco


# One module per method; importing it registers the method.
_MODULES = ("px", "random_", "magnitude", "snip", "grasp", "synflow", "ntksap", "imp")
for _module in _MODULES:
    importlib.import_module(f"{__name__}.{_module}")

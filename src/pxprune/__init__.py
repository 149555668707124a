"""pxprune: foresight pruning of vision models with PX (Path eXclusion) and its baselines."""

from .api import DisconnectedMasksWarning, prune, score
from .masks import Masks, PruningError, prunable_parameters
from .methods import REGISTRY

__all__ = ["METHODS", "DisconnectedMasksWarning", "Masks", "PruningError", "prunable_parameters",
           "prune", "score"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``pxprune.METHODS``: the registered method names, sorted, read when asked (a method
    registered after import appears too)."""
    if name == "METHODS":
        return tuple(sorted(REGISTRY))
    raise AttributeError(f"module 'pxprune' has no attribute {name!r}")

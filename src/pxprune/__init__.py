"""pxprune: foresight pruning of vision models with PX (Path eXclusion) and its baselines."""

from .api import prune, score
from .masks import Masks, PruningError, prunable_parameters
from .methods import REGISTRY

METHODS: tuple[str, ...] = tuple(sorted(REGISTRY))

__all__ = ["METHODS", "Masks", "PruningError", "prunable_parameters", "prune", "score"]
__version__ = "0.1.0"

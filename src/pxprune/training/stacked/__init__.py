"""Many cells of one model and recipe trained as one stacked computation on one device."""

from .engine import StackedEngine
from .model import StackedModel
from .trainer import StackCell, train_stacked

__all__ = ["StackCell", "StackedEngine", "StackedModel", "train_stacked"]

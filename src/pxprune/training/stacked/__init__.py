"""Many cells of one model and recipe trained as one stacked computation on one device."""

from .model import StackedModel
from .trainer import StackCell, train_stacked

__all__ = ["StackCell", "StackedModel", "train_stacked"]

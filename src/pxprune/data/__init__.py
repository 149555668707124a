"""Datasets as decoded uint8 tensors, the seeded pruning split, tensor augmentation, batches."""

from ..errors import DataError, DatasetNotFoundError
from .augment import crop_flip, normalize, random_crop_flip
from .dataset import ImageDataset
from .download import RESOURCES, Resource, download_dataset, download_url, extract_archive
from .loader import Loader, epoch_order, iterate_batches
from .paths import cache_dir, default_root
from .registry import DATASETS, load_dataset
from .sampling import limit_per_class, pruning_indices, pruning_split

__all__ = [
    "DATASETS",
    "RESOURCES",
    "DataError",
    "DatasetNotFoundError",
    "ImageDataset",
    "Loader",
    "Resource",
    "cache_dir",
    "crop_flip",
    "default_root",
    "download_dataset",
    "download_url",
    "epoch_order",
    "extract_archive",
    "iterate_batches",
    "limit_per_class",
    "load_dataset",
    "normalize",
    "pruning_indices",
    "pruning_split",
    "random_crop_flip",
]

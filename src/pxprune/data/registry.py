"""`load_dataset(name, split)`: find a dataset under the data root, decode it (cached), wrap it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError, DatasetNotFoundError
from . import dataset as ds
from .cache import cached_arrays
from .cifar import CIFAR10_DIR, CIFAR100_DIR, load_cifar10_pickle, load_cifar100_pickle
from .dataset import ImageDataset
from .decode import Geometry
from .download import download_dataset
from .idx import FASHION_MNIST_CLASSES, SYSTEM_FASHION_MNIST, find_idx, load_idx_pair
from .image_folder import decode_files, scan_image_folder
from .image_tar import load_image_tar
from .paths import resolve_root
from .tinyimagenet import TINY_DIR, scan_tinyimagenet

DATASETS = ("cifar10", "cifar10-jpeg", "cifar100", "tinyimagenet", "imagenet", "fashion-mnist",
            "imagefolder:<path>")
CIFAR10_JPEG_TAR = "cifar10-jpeg.tar.gz"
CIFAR10_JPEG_NAME = "CIFAR-10 (JPEG copy)"
Arrays = tuple[np.ndarray, np.ndarray, list[str]]


def _split(split: str) -> str:
    if split in ("train", "test"):
        return split
    if split == "val":
        return "test"
    raise DataError(f"split must be 'train' or 'test', got {split!r}")


def _not_found(what: str, looked: list[Path], hint: str) -> DatasetNotFoundError:
    where = ", ".join(str(p) for p in looked)
    return DatasetNotFoundError(
        f"{what} not found (looked for {where}). {hint} Set PXPRUNE_DATA or pass root= to "
        "point at the folder that holds it."
    )


def _cifar10(root: Path, split: str, download: bool, cache: bool, workers: int | None
             ) -> ImageDataset:
    if (root / CIFAR10_DIR).is_dir():
        arrays: Arrays = load_cifar10_pickle(root / CIFAR10_DIR, split)
        return ImageDataset(*arrays, ds.CIFAR10_MEAN, ds.CIFAR10_STD, "CIFAR-10")
    if (root / CIFAR10_JPEG_TAR).is_file() or (root / "cifar10-jpeg").is_dir():
        return _cifar10_jpeg(root, split, cache, workers)
    if download:
        download_dataset("cifar10", root)
        return _cifar10(root, split, False, cache, workers)
    raise _not_found("CIFAR-10", [root / CIFAR10_DIR, root / CIFAR10_JPEG_TAR],
                     "Pass download=True to fetch the python version (163 MB).")


def _cifar10_jpeg(root: Path, split: str, cache: bool, workers: int | None) -> ImageDataset:
    tar = root / CIFAR10_JPEG_TAR
    if tar.is_file():
        arrays = cached_arrays("cifar10-jpeg", [tar], {"split": split},
                               lambda: load_image_tar(tar, split, Geometry(), workers), cache)
    elif (root / "cifar10-jpeg").is_dir():
        arrays = _folder_arrays(root / "cifar10-jpeg", split, Geometry(), None, cache, workers)
    else:
        raise _not_found(CIFAR10_JPEG_NAME, [tar, root / "cifar10-jpeg"], "")
    return ImageDataset(*arrays, ds.CIFAR10_MEAN, ds.CIFAR10_STD, CIFAR10_JPEG_NAME)


def _cifar100(root: Path, split: str, download: bool) -> ImageDataset:
    folder = root / CIFAR100_DIR
    if not folder.is_dir():
        if not download:
            raise _not_found("CIFAR-100", [folder], "Pass download=True to fetch it (161 MB).")
        download_dataset("cifar100", root)
    arrays = load_cifar100_pickle(folder, split)
    return ImageDataset(*arrays, ds.CIFAR100_MEAN, ds.CIFAR100_STD, "CIFAR-100")


def _folder_arrays(folder: Path, split: str, geo: Geometry, max_per_class: int | None,
                   cache: bool, workers: int | None) -> Arrays:
    files, classes = scan_image_folder(folder, split, max_per_class)
    params = {"split": split, "geo": [geo.resize, geo.crop, geo.mode], "classes": classes}

    def build() -> Arrays:
        return (*decode_files(files, geo, workers), classes)

    return cached_arrays("imagefolder", [p for _, p in files], params, build, cache)


def _imagefolder(spec: str, root: Path, split: str, size: int | None,
                 max_per_class: int | None, cache: bool, workers: int | None) -> ImageDataset:
    path = Path(spec).expanduser()
    if not path.is_dir() and not path.is_absolute() and (root / path).is_dir():
        path = root / path
    if not path.is_dir():
        raise _not_found(f"image folder {spec!r}", [path], "")
    geo = Geometry(resize=size, crop=size)
    arrays = _folder_arrays(path, split, geo, max_per_class, cache, workers)
    return ImageDataset(*arrays, ds.IMAGENET_MEAN, ds.IMAGENET_STD, f"ImageFolder({path})")


def _tinyimagenet(root: Path, split: str, download: bool, size: int | None,
                  max_per_class: int | None, cache: bool, workers: int | None
                  ) -> ImageDataset:
    folder = root / TINY_DIR
    if not folder.is_dir():
        if not download:
            raise _not_found("Tiny-ImageNet", [folder], "Pass download=True to fetch it (237 MB).")
        download_dataset("tinyimagenet", root)
    files, classes = scan_tinyimagenet(folder, split, max_per_class)
    geo = Geometry(resize=size, crop=size)
    params = {"split": split, "geo": [geo.resize, geo.crop], "classes": classes}
    arrays = cached_arrays(
        "tinyimagenet", [p for _, p in files], params,
        lambda: (*decode_files(files, geo, workers), classes), cache,
    )
    return ImageDataset(*arrays, ds.TINYIMAGENET_MEAN, ds.TINYIMAGENET_STD, "Tiny-ImageNet")


def _imagenet(root: Path, split: str, size: int | None, max_per_class: int | None,
              cache: bool, workers: int | None) -> ImageDataset:
    candidates = [root / "imagenet", root / "ILSVRC2012", root]
    folder = next((c for c in candidates if (c / "train").is_dir() and (c / "val").is_dir()),
                  None)
    if folder is None:
        raise _not_found("ImageNet (train/<wnid>/, val/<wnid>/)", candidates[:2],
                         "ImageNet cannot be downloaded automatically; sort val/ into class "
                         "folders.")
    crop = size or 224
    geo = Geometry(resize=round(crop * 256 / 224), crop=crop)
    arrays = _folder_arrays(folder, "train" if split == "train" else "val", geo, max_per_class,
                            cache, workers)
    return ImageDataset(*arrays, ds.IMAGENET_MEAN, ds.IMAGENET_STD, "ImageNet")


def fashion_mnist_dirs(root: Path) -> list[Path]:
    """Folders searched, in order, for the Fashion-MNIST IDX files."""
    return [root / "fashion-mnist", root / "FashionMNIST" / "raw", root / "fashion_mnist",
            SYSTEM_FASHION_MNIST]


def _fashion_mnist(root: Path, split: str, download: bool) -> ImageDataset:
    dirs = fashion_mnist_dirs(root)
    folder = next((d for d in dirs if find_idx(d, "train-images-idx3-ubyte")), None)
    if folder is None:
        if not download:
            raise _not_found("Fashion-MNIST", dirs, "Pass download=True, or install the Debian "
                             "package dataset-fashion-mnist.")
        download_dataset("fashion-mnist", root)
        folder = dirs[0]
    images, labels = load_idx_pair(folder, split)
    return ImageDataset(images, labels, FASHION_MNIST_CLASSES, ds.FASHION_MNIST_MEAN,
                        ds.FASHION_MNIST_STD, "Fashion-MNIST")


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    *,
    size: int | None = None,
    max_per_class: int | None = None,
    cache: bool = True,
    workers: int | None = None,
) -> ImageDataset:
    """Load one split of a named dataset as decoded uint8 images (see DATASETS for the names).

    `size` resizes (shorter side) and centre-crops folder datasets; `max_per_class` decodes
    only the first files of each class of folder datasets; `cache` keeps decoded arrays in
    $PXPRUNE_CACHE (default ~/.cache/pxprune); `workers` is the decode process count.
    """
    split = _split(split)
    base = resolve_root(root)
    key = name.lower()
    if key.startswith("imagefolder:"):
        return _imagefolder(name.split(":", 1)[1], base, split, size, max_per_class, cache,
                            workers)
    if key == "cifar10":
        return _cifar10(base, split, download, cache, workers)
    if key in ("cifar10-jpeg", "cifar10_jpeg"):
        return _cifar10_jpeg(base, split, cache, workers)
    if key == "cifar100":
        return _cifar100(base, split, download)
    if key in ("tinyimagenet", "tiny-imagenet"):
        return _tinyimagenet(base, split, download, size, max_per_class, cache, workers)
    if key == "imagenet":
        return _imagenet(base, split, size, max_per_class, cache, workers)
    if key in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return _fashion_mnist(base, split, download)
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")

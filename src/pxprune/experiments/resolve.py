"""Turning command-line names into objects: models, weights files, pruning data."""

from __future__ import annotations

import importlib
import inspect
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import models
from ..data import DataError, ImageDataset, load_dataset
from ..errors import UsageError
from ..masks import Masks, PruningError, check_model_device, prunable_parameters
from ..user_model import select_output_permanently


def build_model(spec: str, num_classes: int = 10, output: str | None = None) -> nn.Module:
    """A built-in model name (see ``pxprune.models.NAMES``) or ``package.module:function``,
    called as ``function(num_classes=N)`` when it takes ``num_classes``, else ``function()``.
    ``output`` (``--output``: an index such as ``0`` or a key such as ``logits``) makes a model
    that returns several outputs return that one."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            top = module_name.split(".")[0]
            raise UsageError(
                f"cannot import model factory {spec!r}: {exc}; Python looks for {top!r} in the "
                f"current folder and on PYTHONPATH (run from the folder that holds {top}.py or "
                f"{top}/, or set PYTHONPATH=/path/to/that/folder)") from exc
        except AttributeError as exc:
            raise UsageError(f"cannot import model factory {spec!r}: {exc}") from exc
        model = factory(**_class_count_argument(factory, num_classes))
        if not isinstance(model, nn.Module):
            raise UsageError(f"{spec} returned {type(model).__name__}, not an nn.Module")
        check_model_device(model)  # a meta model has no values to move, score or train
    else:
        try:
            model = models.get(spec, num_classes=num_classes)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return select_output_permanently(model, parse_output(output))


def _class_count_argument(factory, num_classes: int | None) -> dict:
    """``{"num_classes": N}`` when the factory takes that keyword (or ``**kwargs``), else {}."""
    if num_classes is None:
        return {}
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return {}
    takes = any(p.name == "num_classes" and p.kind != p.POSITIONAL_ONLY
                or p.kind == p.VAR_KEYWORD for p in params)
    return {"num_classes": num_classes} if takes else {}


def parse_output(output: str | int | None) -> str | int | None:
    """``--output``: digits name a tuple index, anything else a dict key or attribute."""
    if isinstance(output, str) and output.strip().lstrip("-").isdigit():
        return int(output)
    if output == "":
        raise UsageError("--output is empty: give an index (0) or a key (logits)")
    return output


def _matching_model_hint(state: dict, own: dict) -> str:
    """A hint naming the built-in model that fits an Idelbayev CIFAR ResNet file (option-A
    shortcuts, a ``linear`` classifier: the shared ``resnet20-*.th``), else ""."""
    if "linear.weight" not in state or "linear.weight" in own:
        return ""
    blocks = {k.split(".")[1] for k in state if k.startswith("layer1.")}
    depth = 6 * len(blocks) + 2
    name = f"resnet{depth}_a"
    if name not in models.NAMES:
        return ""
    return (f"; these are CIFAR ResNet-{depth} weights with option-A shortcuts: use --model "
            f"{name} (and --norm imagenet)")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state_dict file (``module.`` prefixes and ``{'state_dict': ...}`` wrappers)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot read weights from {path}: not a torch.save'd state_dict "
                         f"({first[:120]})") from exc
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise UsageError(f"{path} does not hold a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise UsageError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shape {wrong[:5]}"
            + (" ..." if len(missing) + len(unexpected) + len(wrong) > 15 else "")
            + _matching_model_hint(state, own)
        )
    model.load_state_dict(state, strict=False)
    return model


def integer_labels(labels: object, source: str) -> torch.Tensor:
    """Labels as int64 class indices; strings, fractional or negative values are a DataError
    (never silently truncated)."""
    array = labels.detach().cpu().double().numpy() if isinstance(labels, torch.Tensor) and \
        labels.is_floating_point() else np.asarray(labels)
    if array.dtype.kind not in "iuf":
        raise DataError(f"{source}: labels must be integer class indices 0..K-1, got "
                        f"{'strings' if array.dtype.kind in 'USO' else array.dtype}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            bad = array[~np.isfinite(array) | (array != np.round(array))][:3].tolist()
            raise DataError(f"{source}: labels must be integer class indices, found {bad}")
    out = torch.as_tensor(array.astype(np.int64))
    if out.numel() and int(out.min()) < 0:
        raise DataError(f"{source}: labels must be >= 0, found {int(out.min())}")
    return out


def _from_arrays(images: np.ndarray | torch.Tensor, labels, source: str) -> ImageDataset:
    if not isinstance(images, torch.Tensor):
        array = np.asarray(images)
        if array.dtype.kind not in "uif":
            raise DataError(f"{source}: images must be numbers (uint8 or float), got "
                            f"{array.dtype}")
        images = torch.as_tensor(array)
    labels = integer_labels(labels, source)
    if images.dim() != 4 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{source}: expected images (N, C, H, W) and N labels, got "
                        f"{tuple(images.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise DataError(f"{source}: the file holds no examples")
    if images.shape[-1] in (1, 2, 3, 4) and images.shape[1] not in (1, 2, 3, 4):
        images = images.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW (grey, RGB, RGBA)
    classes = [str(i) for i in range(int(labels.max()) + 1)] if len(labels) else []
    if images.dtype == torch.uint8:  # normalise with the file's own channel statistics
        mean = tuple(float(m) for m in (images.float() / 255).mean((0, 2, 3)))
        std = tuple(float(s) for s in (images.float() / 255).std((0, 2, 3)).clamp_min(1e-3))
    else:
        mean, std = (0.0,) * images.shape[1], (1.0,) * images.shape[1]
    return ImageDataset(images, labels, classes, mean, std, Path(source).name)


def load_data_file(path: str | Path) -> ImageDataset:
    """A ``.pt`` ({'images', 'labels'} or a pair) or ``.npz`` (images/labels or x/y) file."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                keys = set(z.files)
                xi = "images" if "images" in keys else "x"
                yi = "labels" if "labels" in keys else "y"
                return _from_arrays(z[xi], z[yi], str(path))
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise DataError(f"data file {path} does not exist") from exc
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile,
            pickle.UnpicklingError) as exc:
        raise DataError(f"cannot read data from {path} (corrupt or not an images/labels "
                        f"file): {exc}") from exc
    if isinstance(blob, dict) and "images" in blob and "labels" in blob:
        return _from_arrays(blob["images"], blob["labels"], str(path))
    if isinstance(blob, (tuple, list)) and len(blob) == 2:
        return _from_arrays(blob[0], blob[1], str(path))
    raise DataError(f"{path}: expected {{'images', 'labels'}} or an (images, labels) pair")


def is_data_file(spec: str) -> bool:
    """True for a ``.pt``/``.pth``/``.npz`` file (a user's own data), not a dataset name."""
    return spec.endswith((".pt", ".pth", ".npz"))


def load_any_dataset(spec: str, split: str = "train") -> ImageDataset:
    """A dataset name for ``pxprune.data.load_dataset`` or a ``.pt``/``.npz`` file."""
    if is_data_file(spec):
        return load_data_file(spec)
    return load_dataset(spec, split)


__all__ = ["PruningError", "UsageError", "build_model", "load_any_dataset", "load_data_file",
           "load_weights"]


def read_masks_file(given: str | Path) -> tuple[Path, Masks, dict]:
    """``--masks``: a masks file, or a ``pxprune prune`` / ``run`` folder holding
    ``masks.safetensors``; returns its path, the masks and what was stored beside them."""
    path = Path(given)
    if path.is_dir():
        path = path / "masks.safetensors"
    if not path.is_file():
        raise UsageError(f"--masks {given}: no masks file there (give a .safetensors file "
                         f"written by pxprune or Masks.save, or a pxprune prune folder)")
    return path, Masks.load(path), Masks.metadata(path)


def check_masks_fit(masks: Masks, model: nn.Module, source: str | Path) -> None:
    """Masks to train must name prunable tensors of this model with their shapes; a tensor the
    masks leave out trains dense (as with --keep-dense)."""
    prunable = prunable_parameters(model)
    unknown = [n for n in masks if n not in prunable]
    if unknown:
        raise UsageError(f"{source} does not fit the model: {unknown[:4]} are not its prunable "
                         f"weights (is it the same --model?)")
    wrong = [n for n, m in masks.items() if tuple(m.shape) != tuple(prunable[n].shape)]
    if wrong:
        raise UsageError(f"{source} does not fit the model: wrong shape for {wrong[:4]}")

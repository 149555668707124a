"""One strict state-dict loader for every model (built-in or the user's): read a weights file
without running code, strip the prefixes wrappers add, and refuse in one line what does not fit.

Every place that puts weights into a model (``--weights`` of prune / run / transfer, the CIFAR
ResNet ``.th`` files, EfficientNet-Lite0's package file, transfer backbones) goes through
:func:`load_state_dict_strictly`, so they agree on what "matches" means.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from torch import Tensor, nn

from ..errors import FileFormatError, WeightsMismatchError
from ..io import load_tensors
from ..user_model import unwrap

# what nn.DataParallel / DistributedDataParallel and torch.compile put before every key
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# entries that hold the state dict inside a training checkpoint
NESTED_KEYS = ("state_dict", "model", "model_state_dict")
# buffers old checkpoints predate (left as the model has them when absent)
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
SHOWN = 4  # keys named per kind in an error line


def read_state_dict(path: str | os.PathLike[str], what: str = "weights file", *,
                    hint: str = "") -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file or of a ``torch.save``'d state dict read with
    ``weights_only=True`` (never unpickles code); a ``{"state_dict": ...}``-style checkpoint is
    unwrapped. Anything else is a one-line :class:`FileFormatError` (``hint`` says what to do)."""
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    if path.suffix == ".safetensors":
        blob: object = _read_safetensors(path, what, suffix)
    else:
        blob = load_tensors(path, what, hint=hint)
    for key in NESTED_KEYS:
        if isinstance(blob, Mapping) and isinstance(blob.get(key), Mapping):
            blob = blob[key]
            break
    if not isinstance(blob, Mapping):
        raise FileFormatError(f"{what} {path} holds a {type(blob).__name__}, not a state dict"
                              f"{suffix}")
    state = {str(k): v for k, v in blob.items() if isinstance(v, Tensor)}
    if not state:
        raise FileFormatError(f"{what} {path} holds no tensors{suffix}")
    return state


def _read_safetensors(path: Path, what: str, suffix: str = "") -> dict[str, Tensor]:
    """A safetensors file's tensors on the CPU; an unreadable file is a FileFormatError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileFormatError(f"{what} {path} does not exist or is not a file{suffix}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise FileFormatError(f"{what} {path} is not a readable safetensors file ({first})"
                              f"{suffix}") \
            from exc


def strip_wrapper_prefixes(state: Mapping[str, Tensor],
                           own: Iterable[str] = ()) -> dict[str, Tensor]:
    """``state`` without the ``module.`` / ``_orig_mod.`` prefix a wrapper put before *every*
    key (repeatedly: a compiled DataParallel model has both), unless the model's own keys
    (``own``) carry it too. A prefix on only some keys is a real module name and stays."""
    own = list(own)
    out = dict(state)
    while out:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in out)), None)
        if prefix is None or (own and all(k.startswith(prefix) for k in own)):
            return out
        out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def load_state_dict_strictly(
    model: nn.Module, state: Mapping[str, Tensor], *, source: str = "weights",
    skip: Iterable[str] = (), hint: str = "",
) -> list[str]:
    """Copy ``state`` into ``model`` (the module inside a DataParallel / compile wrapper) and
    return the keys skipped; every key must fit (:func:`fitting_state_dict`)."""
    body, skipped = fitting_state_dict(model, state, source=source, skip=skip, hint=hint)
    unwrap(model)[0].load_state_dict(body, strict=False)
    return skipped


def fitting_state_dict(
    model: nn.Module, state: Mapping[str, Tensor], *, source: str = "weights",
    skip: Iterable[str] = (), hint: str = "",
) -> tuple[dict[str, Tensor], list[str]]:
    """``(entries to load, keys skipped)`` once every key of ``state`` is checked against
    ``model`` without changing it (so a caller can refuse before any work and load later).

    Keys starting with a prefix in ``skip`` (e.g. ``"fc."``: a classifier about to be replaced)
    are neither loaded nor required. Otherwise a missing key (``num_batches_tracked`` buffers
    excepted: old checkpoints predate them), an unexpected key or a shape mismatch raises one
    :class:`WeightsMismatchError` line naming ``source``, the model and a few keys of each kind,
    then ``hint``.
    """
    inner, _ = unwrap(model)
    own = inner.state_dict()
    state = strip_wrapper_prefixes(state, own)
    skip = tuple(skip)
    skipped = [k for k in state if k.startswith(skip)]  # startswith(()) is False
    body = {k: v for k, v in state.items() if not k.startswith(skip)}
    missing = [k for k in own if k not in body and not k.startswith(skip)
               and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in body if k not in own]
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in body.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{label} {_few(keys)}" for label, keys in (
            ("missing keys", missing), ("unexpected keys", unexpected),
            ("shape mismatches", wrong)) if keys]
        raise WeightsMismatchError(f"{source} does not match the model "
                                   f"{type(inner).__name__}: {'; '.join(parts)}{hint}")
    return body, skipped


def load_weights_file(model: nn.Module, path: str | os.PathLike[str], *,
                      skip: Iterable[str] = (), what: str = "weights file") -> nn.Module:
    """Read ``path`` safely (:func:`read_state_dict`) and load it strictly into ``model``."""
    load_state_dict_strictly(model, read_state_dict(path, what), source=f"{what} {path}",
                             skip=skip)
    return model


def _few(keys: list[str]) -> str:
    """The first few keys as a list, with how many more there are."""
    shown = ", ".join(repr(k) for k in keys[:SHOWN])
    more = f", ... {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return f"[{shown}{more}]"


__all__ = ["fitting_state_dict", "load_state_dict_strictly", "load_weights_file", "read_state_dict",
           "strip_wrapper_prefixes"]

"""Reading torch files without running code: ``weights_only=True``, one-line errors."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from .errors import PxpruneError


class FileFormatError(PxpruneError):
    """A file pxprune reads is missing, truncated, corrupt, or holds more than tensors and plain
    values (refused: unpickling arbitrary objects can run code)."""


def load_tensors(path: str | os.PathLike, what: str, *, map_location: object = "cpu",
                 hint: str = "") -> object:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists, tuples and
    dicts only; anything else, or a file torch cannot read, is a FileFormatError naming
    ``what`` and the file (``hint`` says what to do about it)."""
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    if not path.is_file():
        raise FileFormatError(f"{what} {path} does not exist or is not a file{suffix}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # a class or function weights_only refuses
        text = str(exc)
        if "weights only" in text.lower() or "weights_only" in text.lower():
            match = re.search(r"Unsupported (?:global|operand)[^.\n]*", text)
            found = f" ({match.group(0)})" if match else ""
            raise FileFormatError(
                f"{what} {path} holds Python objects other than tensors and plain values"
                f"{found}; refused, since loading them could run code{suffix}") from exc
        first = (text.strip().splitlines() or [""])[0][:160]
        raise FileFormatError(f"{what} {path} is corrupt ({first}){suffix}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError,
            ImportError, IndexError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise FileFormatError(f"{what} {path} is truncated or corrupt ({first}){suffix}") from exc

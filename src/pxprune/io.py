"""Files pxprune writes and reads: atomic writers, output folders, and torch files loaded without
running code (``weights_only``). Every failure the user can fix is a one-line PxpruneError.

Atomic writes go through a temporary file beside the target (named by
:func:`pxprune.tempfiles.temp_path`, cleaned up after killed writers by
:func:`pxprune.tempfiles.remove_stale_temps`).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import DamagedFileError, FileFormatError, OutputError
from .tempfiles import temp_path

# errno values that mean "the environment refused", not "pxprune has a bug"
USER_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                         errno.EISDIR, errno.EEXIST, errno.EDQUOT, errno.ENOENT,
                         errno.ENAMETOOLONG, errno.EFBIG})


def describe_os_error(exc: OSError, what: str) -> str:
    """One line saying which file failed and why (``disk full``, ``read-only``, ...)."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied",
              errno.ENOTDIR: "a path component is a file, not a folder",
              errno.EISDIR: "it is a folder",
              errno.EFBIG: "file too large (a file-size limit, e.g. ulimit -f, or the file "
                           "system's largest file)"}.get(exc.errno, exc.strerror or str(exc))
    name = exc.filename or what
    return f"cannot write {name}: {reason}"


# --------------------------------------------------------------------------- writing
def atomic_write_bytes(path: str | os.PathLike, write: Callable[[object], None]) -> None:
    """Write a file via a temp file in the same folder, fsync, then os.replace: a reader sees the
    old file or the new one, never half of one; an OSError becomes an OutputError naming it."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise
        raise OutputError(describe_os_error(exc, str(path))) from exc
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace a text file (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, lambda f: f.write(text.encode()))  # type: ignore[attr-defined]


def atomic_write_json(path: str | os.PathLike, data: object, *, indent: int | None = 2,
                      default: Callable[[object], object] | None = None) -> None:
    """Atomically replace a JSON file, ending in a newline. The data is serialised before the
    file is touched, so a value JSON cannot hold leaves the old file as it was."""
    atomic_write_text(path, json.dumps(data, indent=indent, default=default) + "\n")


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create an output folder (and parents); a file in the way or a read-only place is an
    OutputError, one line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise
        raise OutputError(f"cannot create the output folder {path}: "
                          f"{describe_os_error(exc, str(path)).split(': ', 1)[-1]}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"the output folder {path} is not writable")
    return path


# --------------------------------------------------------------------------- reading
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


def read_json(path: str | os.PathLike, what: str, *, hint: str = "") -> object:
    """A JSON file pxprune wrote earlier; one that cannot be read or parsed (truncated, edited,
    not JSON) is one :class:`DamagedFileError` line naming ``what`` and the file, then ``hint``."""
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DamagedFileError(f"{what} {path} is unreadable (truncated or not JSON: {first})"
                               f"{suffix}") from None

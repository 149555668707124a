"""PxpruneError: the base of every user-facing error (the CLI prints it as one line, exit 2)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from .tempfiles import temp_path


class PxpruneError(ValueError):
    """Bad input or an environment fault the user can fix; never a bug in pxprune.

    A ValueError so that code catching ValueError before this base existed keeps working.
    """


class OutputError(PxpruneError):
    """An output folder or file cannot be written (read-only, full disk, a file in the way)."""


class DamagedFileError(PxpruneError):
    """A file pxprune wrote earlier is truncated, not what it should hold, or was edited."""


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


class TrainingDivergedError(PxpruneError, FloatingPointError):
    """Training loss turned NaN or infinite; the last good checkpoint is kept (a lower lr or
    another seed may help). Also a FloatingPointError, what training raised before this class."""

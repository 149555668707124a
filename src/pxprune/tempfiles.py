"""Temporary files of atomic writes: their names, and the removal of those a killed writer left.

An atomic write goes through ``.{name}.{pid}.tmp`` beside the file (see
:func:`pxprune.io.atomic_write_bytes`); a writer killed mid-write (SIGKILL, out of memory,
power) leaves it behind. Opening a folder removes the temporary files of writers that no longer
exist on this machine; a live writer's file (its pid is alive) is never touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.tmp$")


def temp_path(path: Path) -> Path:
    """The temporary file through which this process writes ``path`` atomically."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # not a pid this system can have
        return False
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files in ``folder`` (not below it) whose writer is dead; return
    their names. A file that cannot be deleted is left (it never blocks the command)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_PATTERN.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group("pid"))
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(entry.name)
    return removed

"""Who is running a sweep cell: ``<cell>/running.json``, so that ``sweep --status`` can tell a
running cell from an interrupted one and two launchers never train the same folder at once.

The file is created (exclusively) when a cell starts, its modification time is refreshed every
``HEARTBEAT_S`` seconds by a daemon thread, and it is removed when the cell ends (done, failed,
Ctrl-C, or a Slurm time limit that submitit turns into a requeue). A killed process (SIGKILL,
node failure, out of memory) leaves it behind: it then counts as stale, and the next run of the
cell replaces it. Stale means: written on this host by a process id that no longer exists, or,
from another host (a cluster node), not refreshed for ``STALE_S`` seconds.

``pxprune run`` and ``pxprune prune`` hold the same lock on their ``--out``: a folder has one
writer at a time. The thread holding a folder's lock may enter it again (a sweep cell holds
its folder, then runs it); any other thread or process is refused. Taking the lock also
removes temporary files that killed writers left in the folder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import OutputError
from ..tempfiles import pid_alive, remove_stale_temps

FILE = "running.json"
HEARTBEAT_S = 30.0
STALE_S = 300.0  # ten missed heartbeats: a live writer on a busy shared file system refreshes


class CellBusy(OutputError):
    """The folder is being written by another live process (another launcher or invocation)."""


def live_holder(folder: str | Path, now: float | None = None) -> dict | None:
    """The lock's content plus ``age_s`` (seconds since the last heartbeat) when a live process
    holds the cell, else None (no lock, or a stale one)."""
    path = Path(folder) / FILE
    try:
        info = json.loads(path.read_text())
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except (FileNotFoundError, json.JSONDecodeError):  # absent, or being written this instant
        return None
    if not isinstance(info, dict):
        return None
    if info.get("host") == socket.gethostname() and not pid_alive(_int(info.get("pid"))):
        return None
    if age > STALE_S:
        return None
    return {**info, "age_s": age}


def _int(value: object) -> int:
    """A pid read from the lock file (-1 when it is not an integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


_HELD: dict[str, int] = {}  # folders this process holds -> the holding thread


def _held_by_this_thread(folder: Path) -> bool:
    """Whether this thread already holds ``folder``'s lock (a nested entry: a sweep cell's
    lock, then the run inside it)."""
    holder = live_holder(folder)
    return (_HELD.get(str(folder.resolve())) == threading.get_ident() and holder is not None
            and holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid())


def busy_message(folder: Path, holder: dict) -> str:
    """One line: who writes ``folder``, and what to do."""
    return (f"{folder} is being written by another pxprune process ({describe(holder)}); "
            f"wait for it to end or choose another folder")


def describe(holder: dict) -> str:
    """One line naming the holder: job id when known, host and pid, heartbeat age."""
    job = f"job {holder['job_id']}, " if holder.get("job_id") else ""
    return (f"{job}{holder.get('host')} pid {holder.get('pid')}, heartbeat "
            f"{holder.get('age_s', 0):.0f} s ago")


class CellLock:
    """Context manager holding ``<folder>/running.json`` with a heartbeat while a cell runs."""

    def __init__(self, folder: str | Path, job_id: str | None = None) -> None:
        self.path = Path(folder) / FILE
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id,
                     "started": datetime.now(timezone.utc).isoformat()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nested = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(self.info) + "\n")
        return True

    def __enter__(self) -> CellLock:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        if not self._create():
            if _held_by_this_thread(folder):  # entered again by its holder: nothing to do
                self._nested = True
                return self
            holder = live_holder(folder)
            if holder is not None:
                raise CellBusy(busy_message(folder, holder))
            self.path.unlink(missing_ok=True)  # stale: its writer was killed
            if not self._create():  # another process took it over in between
                raise CellBusy(busy_message(folder, live_holder(folder) or {}))
        _HELD[str(folder.resolve())] = threading.get_ident()
        remove_stale_temps(folder)  # what killed writers left half-written
        self._thread = threading.Thread(target=self._beat, daemon=True, name="cell-heartbeat")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:  # removed under us (folder deleted): nothing to refresh
                return

    def __exit__(self, *exc) -> None:
        if self._nested:
            return
        _HELD.pop(str(self.path.parent.resolve()), None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            mine = json.loads(self.path.read_text()) == self.info
        except (FileNotFoundError, json.JSONDecodeError):
            return
        if mine:
            self.path.unlink(missing_ok=True)

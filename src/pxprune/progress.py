"""Progress of a long loop: a live bar on a terminal, and in a log file a line every tenth of
the way (a bar's hundred redraws would fill the file; nothing at all leaves a user guessing)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def report_progress(items: Iterable[T], total: int, desc: str, enabled: bool = True,
                    start: int = 0) -> Iterator[T]:
    """``items`` unchanged, with progress on stderr: a tqdm bar on a terminal, else a line such
    as ``px rounds: 30/100 (30 %), 12 s`` at each tenth; nothing when not ``enabled``."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        yield from tqdm(items, total=total, initial=start, desc=desc, leave=False)
        return
    began, step = time.monotonic(), max(1, total // 10)
    for done, item in enumerate(items, start=start + 1):
        yield item
        if done % step == 0 or done == total:
            print(f"{desc}: {done}/{total} ({100 * done // max(total, 1)} %), "
                  f"{time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)

"""One cross-process lock for shared caches and state on this machine.

Several processes share ``~/.cache/conveyor`` and the local clusters' state: the demo, a server, and
(since the test command runs its tests in parallel workers) several test processes at once. Each
of them may find a cache entry missing and start making it; without a lock two builders write the
same ``.partial`` file or one deletes what the other is reading. ``flock`` locks are released by the
kernel when their holder dies, so a crashed builder never leaves a stale lock behind.

A lock is held per open file: the same process taking it twice through two calls would wait on
itself, so callers take it once, around the whole check-then-make.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created with its directory). Yields True while held; with
    ``blocking=False`` yields False at once when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

"""Keys made on first use: two requests that both find the key missing must end with one key.

Stop 25's CI failed with a 500 from ``PUT /repos/{repo}/secrets/...`` while the repository's first CI
run loaded secrets at the same moment: both made a pipeline-secrets key, both wrote it through one
shared temporary file, and the second rename found the file gone. Had it not failed, the first
request's secret would have been encrypted with a key that was then overwritten.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conveyor.core.bootstrap import ensure_secret, write_secret


def _first_uses(path: Path, callers: int) -> list[str]:
    """``callers`` threads released at once, each using the key at ``path`` for the first time."""
    start = threading.Barrier(callers)
    counter = itertools.count()

    def make() -> str:
        time.sleep(0.001)  # key generation takes a moment: widen the window as a busy machine does
        return f"key-{next(counter)}"

    def first_use() -> str:
        start.wait()
        return ensure_secret(path, make)

    with ThreadPoolExecutor(callers) as pool:
        return [f.result() for f in [pool.submit(first_use) for _ in range(callers)]]


def test_writers_racing_on_a_missing_key_all_get_the_one_key_that_was_kept(tmp_path: Path) -> None:
    for attempt in range(20):
        path = tmp_path / f"attempt-{attempt}.key"
        seen = _first_uses(path, 8)
        assert len(set(seen)) == 1, seen
        assert path.read_text().strip() == seen[0]
        assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"attempt-{i}.key" for i in range(20))


def test_a_kept_key_is_never_replaced_and_write_secret_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "k"
    assert ensure_secret(path, lambda: "first") == "first"
    assert ensure_secret(path, lambda: "second") == "first"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: write_secret(path, f"v{i}"), range(64)))
    assert path.read_text().strip().startswith("v") and [p.name for p in tmp_path.iterdir()] == ["k"]

"""core.locks.file_lock: one process at a time across processes, released when its holder dies."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conveyor.core.locks import file_lock

HOLD = """
import sys, time
from pathlib import Path
from conveyor.core.locks import file_lock
with file_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_waits_and_a_dead_holder_releases_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "cache" / ".thing.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with file_lock(lock, blocking=False) as held:
            assert held is False  # the other process has it
        holder.kill()  # a builder that crashed: the kernel drops its lock
        holder.wait(10)
        deadline = time.monotonic() + 10
        while True:
            with file_lock(lock, blocking=False) as held:
                if held or time.monotonic() > deadline:
                    break
            time.sleep(0.05)
        assert held is True
    finally:
        holder.kill()

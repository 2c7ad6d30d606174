"""One step's process: its own process group, live output, timeout, cancellation, output limit.

Everything the step starts shares one process group, so a timeout or a cancellation ends all of
it (SIGTERM, then SIGKILL after a grace period), as does the end of the step itself: nothing a
step leaves behind in the background outlives it.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GRACE_SECONDS = 5.0
PARTIAL_LINE_LIMIT = 8192


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None
    reason: str  # exited | timeout | cancelled | output-limit | start-failed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason == "exited" and self.exit_code == 0


def emit_lines(pending: str, sink: Callable[[str], None], mask: Callable[[str], str]) -> str:
    """Mask and send the complete lines of ``pending`` (or all of it, once a line outgrows
    ``PARTIAL_LINE_LIMIT``); returns what is kept for later. Whole lines only, so a secret is never
    split across two chunks. Both executors' log readers use it."""
    cut = pending.rfind("\n") + 1
    if cut == 0 and len(pending) > PARTIAL_LINE_LIMIT:
        cut = len(pending)
    if cut:
        sink(mask(pending[:cut]))
    return pending[cut:]


class _Reader(threading.Thread):
    """Drains the pipe, masks secrets line by line and hands text to ``sink`` until the limit."""

    def __init__(self, fd: int, sink: Callable[[str], None], mask: Callable[[str], str], limit: int) -> None:
        super().__init__(daemon=True, name="step-output")
        self.fd, self.sink, self.mask, self.limit = fd, sink, mask, limit
        self.total = 0
        self.over_limit = threading.Event()

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        try:
            while True:
                data = os.read(self.fd, 65536)
                if not data:
                    break
                self.total += len(data)
                if self.over_limit.is_set():
                    continue  # keep draining so the writer is not blocked while it is being stopped
                if self.total > self.limit:
                    self.over_limit.set()
                    data = data[: max(0, len(data) - (self.total - self.limit))]
                pending = emit_lines(pending + decoder.decode(data), self.sink, self.mask)
            pending += decoder.decode(b"", final=True)
            if pending:
                self.sink(self.mask(pending) + "\n")
        finally:
            os.close(self.fd)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_process(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    sink: Callable[[str], None],
    mask: Callable[[str], str],
    should_cancel: Callable[[], bool],
    max_output: int,
    tick: Callable[[], None] = lambda: None,
    on_stop: Callable[[], None] = lambda: None,
    preexec: Callable[[], None] | None = None,
    on_start: Callable[[int], None] = lambda pgid: None,
) -> Outcome:
    """Run ``argv`` to completion or until stopped; ``tick`` is called about ten times a second."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=write_fd,
                                stderr=write_fd, start_new_session=True,
                                preexec_fn=preexec)
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        return Outcome(None, "start-failed", f"cannot start {argv[0]}: {exc.strerror or exc}")
    os.close(write_fd)
    on_start(proc.pid)  # the process group id too (new session)
    reader = _Reader(read_fd, sink, mask, max_output)
    reader.start()
    deadline = time.monotonic() + timeout
    reason = "exited"
    stop_sent_at: float | None = None
    while True:
        try:
            proc.wait(0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        tick()
        if stop_sent_at is None:
            if time.monotonic() > deadline:
                reason = "timeout"
            elif reader.over_limit.is_set():
                reason = "output-limit"
            elif should_cancel():
                reason = "cancelled"
            if reason != "exited":
                stop_sent_at = time.monotonic()
                _signal_group(proc.pid, signal.SIGTERM)
                on_stop()
        elif time.monotonic() - stop_sent_at > GRACE_SECONDS:
            _signal_group(proc.pid, signal.SIGKILL)
    # Whatever the step left running in its group goes with it.
    _signal_group(proc.pid, signal.SIGKILL)
    reader.join(10)
    if reason == "exited" and reader.over_limit.is_set():
        reason = "output-limit"
    return Outcome(proc.returncode, reason)

"""A run's log on its way to the server: buffered, flushed every 0.3 s or 32 KiB, step by step.

The server numbers chunks as it stores them (one run-wide sequence), so any server process can
stream any run's log. While the server is unreachable the buffer holds what steps wrote (bounded
by the output limit each step already has) and the flush retries.
"""

from __future__ import annotations

import threading
import time

from conveyor.pipelines.runner.client import RunnerClient

FLUSH_BYTES = 32 * 1024
FLUSH_SECONDS = 0.3


class LogBuffer:
    def __init__(self, client: RunnerClient, run_id: int) -> None:
        self.client, self.run_id = client, run_id
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._parts: list[tuple[int, str]] = []
        self._size = 0
        self._last_flush = time.monotonic()

    def write(self, step: int, text: str) -> None:
        with self._lock:
            self._parts.append((step, text))
            self._size += len(text)
            big = self._size >= FLUSH_BYTES
        if big:
            self.flush()

    def line(self, step: int, text: str) -> None:
        self.write(step, text.rstrip("\n") + "\n")

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send what was written, merged into one chunk per consecutive step, in order."""
        with self._send_lock:
            with self._lock:
                parts, self._parts, self._size = self._parts, [], 0
                self._last_flush = time.monotonic()
            chunks: list[tuple[int, str]] = []
            for step, text in parts:
                if chunks and chunks[-1][0] == step:
                    chunks[-1] = (step, chunks[-1][1] + text)
                else:
                    chunks.append((step, text))
            for i in range(0, len(chunks), 200):
                self.client.append_logs(self.run_id, chunks[i:i + 200])

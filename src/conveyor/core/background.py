"""A background loop: a daemon thread that does units of work, sleeping when idle until woken."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class BackgroundLoop:
    """Subclasses implement ``run_once`` (True when it did something, so the loop goes on at once)."""

    name = "background"

    def __init__(self, poll_interval: float = 1.0, wakeup: threading.Event | None = None) -> None:
        self.poll_interval = poll_interval
        self._wakeup = wakeup or threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15) -> None:
        self._stop.set()
        self._wakeup.set()
        if self._thread:
            self._thread.join(timeout=timeout)
        self.close()

    def close(self) -> None:
        """Release resources once the loop has stopped."""

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:
                log.exception("%s iteration failed", self.name)
                worked = False
            if not worked:
                self._wakeup.wait(self.poll_interval)
                self._wakeup.clear()

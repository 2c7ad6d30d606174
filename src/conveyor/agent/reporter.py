"""Commit statuses on the forge: what the CD stage waits on.

A verdict must arrive even when the forge is down for a while (restarted, upgraded, its network
cut): the promotion waits for exactly this status. Earlier the reporter tried three times within
about 2 ms and gave up, so a server restart mid-promotion cost a whole sync interval (30 s) before
the next reconcile posted it again. Now a status that could not be sent (a transport error, 5xx,
429) stays queued and a background thread retries it with capped exponential backoff (0.5 s
doubling to 30 s) until it is delivered, refused for good (another 4xx), or replaced by a newer
status for the same commit and context. The queue is bounded; the oldest entries go first.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("conveyor.agent.reporter")

PENDING, SUCCESS, FAILURE, ERROR = "pending", "success", "failure", "error"
FIRST_DELAY, MAX_DELAY = 0.5, 30.0
MAX_QUEUED = 200


@dataclass
class _Queued:
    url: str
    body: dict[str, str]
    delay: float = FIRST_DELAY


class Reporter:
    def __init__(self, server: str | None, token: str | None, cluster: str, target_url: str | None) -> None:
        self.server = server.rstrip("/") if server else None
        self.token, self.cluster, self.target_url = token, cluster, target_url
        self.http = httpx.Client(timeout=10.0)
        self._queue: OrderedDict[tuple[str, str], _Queued] = OrderedDict()  # (url, context) -> latest
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.http.close()

    def context(self, sync: str) -> str:
        return f"conveyor/deploy/{self.cluster}/{sync}"

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def report(self, repo: str | None, sha: str, sync: str, state: str, description: str) -> bool:
        """Send now, or queue for the retry thread; True unless there is nowhere to send or the forge
        refused it for good (a deployment never waits on the forge either way)."""
        if not self.server or not repo:
            return False
        body = {"state": state, "context": self.context(sync), "description": description[:1000],
                "target_url": self.target_url or ""}
        item = _Queued(f"{self.server}/api/v1/repos/{repo}/statuses/{sha}", body)
        key = (item.url, body["context"])
        with self._lock:
            self._queue.pop(key, None)  # a newer verdict replaces one still waiting
        outcome = self._send(item)
        if outcome == "retry":
            self._enqueue(key, item)
        return outcome != "refused"

    def upload_status(self, document: dict[str, Any]) -> bool:
        """The agent's whole /status document for the server's clusters page (best effort: the next
        upload, a few seconds later, carries the same and newer news)."""
        if not self.server or not self.token:
            return False
        try:
            r = self.http.put(f"{self.server}/api/v1/clusters/{self.cluster}/agent-status", json=document,
                              headers={"Authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as exc:
            log.debug("status document not uploaded: %s", exc)
            return False
        if r.status_code >= 300:
            log.warning("forge refused the status document: %s %s", r.status_code, r.text[:200])
        return r.status_code < 300

    def _send(self, item: _Queued) -> str:
        """'sent', 'refused' (a 4xx other than 429: retrying cannot help) or 'retry'."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        what = f"status {item.body['state']} for {item.url.rsplit('/', 1)[-1][:12]}"
        try:
            r = self.http.post(item.url, json=item.body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("%s not sent (retrying in %.1fs): %s", what, item.delay, exc)
            return "retry"
        if r.status_code < 300:
            return "sent"
        if r.status_code < 500 and r.status_code != 429:
            log.warning("forge refused %s: %s %s", what, r.status_code, r.text[:200])
            return "refused"
        log.warning("forge answered %s to %s (retrying in %.1fs)", r.status_code, what, item.delay)
        return "retry"

    def _enqueue(self, key: tuple[str, str], item: _Queued) -> None:
        with self._lock:
            self._queue[key] = item
            while len(self._queue) > MAX_QUEUED:
                dropped, _ = self._queue.popitem(last=False)
                log.error("status queue full: dropped the oldest (%s)", dropped[0])
            if self._thread is None:
                self._thread = threading.Thread(target=self._retry_loop, name="status-retry", daemon=True)
                self._thread.start()
        self._wake.set()

    def _retry_loop(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                head = next(iter(self._queue.items()), None)
            if head is None:
                self._wake.wait()
                self._wake.clear()
                continue
            key, item = head
            if self._closed.wait(item.delay):
                return
            with self._lock:
                if self._queue.get(key) is not item:
                    continue  # replaced or gone meanwhile
            outcome = self._send(item)
            with self._lock:
                if self._queue.get(key) is item:
                    if outcome == "retry":
                        item.delay = min(MAX_DELAY, item.delay * 2)
                        self._queue.move_to_end(key)
                    else:
                        del self._queue[key]

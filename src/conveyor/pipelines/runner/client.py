"""The runner's side of the runner protocol (see ``pipelines/runner_api.py``).

Every call retries transport errors and 5xx answers with exponential backoff (tenacity) for up to
``patience`` seconds, so a run survives a server restart: its logs and step reports wait in memory
and are sent once the server answers again. A ``run.lease-lost`` conflict is not retried: the run
was taken away (cancelled elsewhere, or recovered after a silence) and the runner must stop it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

CHUNK = 1 << 20


class LeaseLost(Exception):
    """The server no longer considers this instance the run's runner."""


class ServerRefused(Exception):
    def __init__(self, status: int, detail: str, rule: str | None) -> None:
        super().__init__(f"{status}: {detail}" + (f" [{rule}]" if rule else ""))
        self.status, self.detail, self.rule = status, detail, rule


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ServerRefused) and exc.status >= 500


class RunnerClient:
    def __init__(self, server: str, token: str, instance: str, patience: float = 600.0) -> None:
        self.server = server.rstrip("/")
        self.instance = instance
        self.patience = patience
        self.http = httpx.Client(base_url=self.server, headers={"Authorization": f"Bearer {token}"},
                                 timeout=httpx.Timeout(60.0, connect=10.0))

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, *, json: Any = None, content: Any = None,
              params: dict[str, Any] | None = None, timeout: float | None = None,
              patience: float | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        limit = self.patience if patience is None else patience
        for attempt in Retrying(retry=retry_if_exception(_transient), stop=stop_after_delay(limit),
                                wait=wait_exponential(multiplier=0.2, max=10), reraise=True):
            with attempt:
                kwargs: dict[str, Any] = {"json": json, "params": params, "headers": headers}
                if content is not None:
                    kwargs = {"content": content() if callable(content) else content, "params": params,
                              "headers": headers}
                if timeout is not None:
                    kwargs["timeout"] = timeout
                r = self.http.request(method, path, **kwargs)
                if r.status_code >= 400:
                    try:
                        body = r.json()
                    except ValueError:
                        body = {"detail": r.text[:300]}
                    if body.get("rule") == "run.lease-lost":
                        raise LeaseLost(body.get("detail", ""))
                    raise ServerRefused(r.status_code, str(body.get("detail") or body), body.get("rule"))
                return r
        raise AssertionError("unreachable")

    def _body(self, **extra: Any) -> dict[str, Any]:
        return {"instance": self.instance, **extra}

    # --- the protocol -------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        return dict(self._call("POST", "/api/v1/runner/hello", json=self._body()).json())

    def claim(self, wait: float) -> dict[str, Any] | None:
        r = self._call("POST", "/api/v1/runner/claim", json=self._body(wait=wait), timeout=wait + 30, patience=30)
        return None if r.status_code == 204 else dict(r.json())

    def heartbeat(self, run_id: int) -> dict[str, Any]:
        # No long retries: the next beat, a second later, is the retry.
        return dict(self._call("POST", f"/api/v1/runner/runs/{run_id}/heartbeat", json=self._body(), patience=0,
                               timeout=10).json())

    def add_steps(self, run_id: int, steps: list[dict[str, Any]]) -> None:
        self._call("POST", f"/api/v1/runner/runs/{run_id}/steps", json=self._body(steps=steps))

    def update_step(self, run_id: int, index: int, **values: Any) -> None:
        body = self._body(**{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in values.items()})
        self._call("PATCH", f"/api/v1/runner/runs/{run_id}/steps/{index}", json=body)

    def append_logs(self, run_id: int, chunks: list[tuple[int, str]]) -> None:
        self._call("POST", f"/api/v1/runner/runs/{run_id}/logs",
                   json=self._body(chunks=[{"step": s, "text": t} for s, t in chunks]))

    def upload_artifact(self, run_id: int, name: str, kind: str, media_type: str, path: Path) -> dict[str, Any]:
        def stream() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

        r = self._call("PUT", f"/api/v1/runner/runs/{run_id}/artifacts/{name}", content=stream,
                       headers={"Content-Type": "application/octet-stream"},
                       params={"kind": kind, "media_type": media_type, "instance": self.instance})
        return dict(r.json())

    def finish(self, run_id: int, state: str, failed_step: str | None, message: str, outputs: dict[str, Any]) -> None:
        self._call("POST", f"/api/v1/runner/runs/{run_id}/finish",
                   json=self._body(state=state, failed_step=failed_step, message=message[:4000], outputs=outputs))

    def sign(self, run_id: int, repository: str, digest: str) -> dict[str, Any]:
        r = self._call("POST", f"/api/v1/runner/runs/{run_id}/sign",
                       json=self._body(repository=repository, digest=digest))
        return dict(r.json())

    def release(self, run_id: int, why: str) -> None:
        self._call("POST", f"/api/v1/runner/runs/{run_id}/release", json=self._body(why=why))

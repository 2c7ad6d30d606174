"""Commit statuses on the forge: what the CD stage waits on."""

from __future__ import annotations

import logging

import httpx

log = logging.getLogger("conveyor.agent.reporter")

PENDING, SUCCESS, FAILURE, ERROR = "pending", "success", "failure", "error"


class Reporter:
    def __init__(self, server: str | None, token: str | None, cluster: str, target_url: str | None) -> None:
        self.server = server.rstrip("/") if server else None
        self.token, self.cluster, self.target_url = token, cluster, target_url
        self.http = httpx.Client(timeout=10.0)

    def close(self) -> None:
        self.http.close()

    def context(self, sync: str) -> str:
        return f"conveyor/deploy/{self.cluster}/{sync}"

    def report(self, repo: str | None, sha: str, sync: str, state: str, description: str) -> bool:
        """Best effort: a forge outage must not stop deployments; failures are logged and retried next time."""
        if not self.server or not repo:
            return False
        body = {
            "state": state,
            "context": self.context(sync),
            "description": description[:1000],
            "target_url": self.target_url or "",
        }
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        for attempt in range(3):
            try:
                r = self.http.post(f"{self.server}/api/v1/repos/{repo}/statuses/{sha}", json=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("status %s for %s@%s not sent (attempt %d): %s", state, repo, sha[:12], attempt + 1, exc)
                continue
            if r.status_code < 300:
                return True
            log.warning("forge refused status %s for %s@%s: %s %s", state, repo, sha[:12], r.status_code, r.text[:200])
            if r.status_code < 500:
                return False
        return False

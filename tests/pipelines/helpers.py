"""Helpers for pipeline tests: repositories with a pipeline file, waiting for runs and statuses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.forge.helpers import WorkingCopy, new_repo
from tests.support.images import ensure_shell_image
from tests.support.server import ServerHandle

FINISHED = ("success", "failure", "error", "cancelled")


def repo_with_pipeline(server: ServerHandle, tmp: Path, pipeline: str | bytes, extra: dict[str, str] | None = None,
                       app: str | None = None) -> tuple[WorkingCopy, str]:
    """A new repository whose main branch gets ``pipeline`` in one push; returns (copy, pushed sha)."""
    ensure_shell_image(server)
    wc = new_repo(server, tmp)
    files: dict[str, str | bytes] = {".conveyor/pipeline.yaml": pipeline, **(extra or {})}
    if app is not None:
        files[".conveyor/app.yaml"] = app
    for name, content in files.items():
        f = wc.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            f.write_bytes(content)
        else:
            f.write_text(content)
        wc.git("add", name)
    wc.git("commit", "-q", "-m", "add pipeline")
    code, out = wc.push("main")
    assert code == 0, out
    return wc, wc.head()


def runs(server: ServerHandle, repo: str) -> list[dict[str, Any]]:
    r = server.api().get("/api/v1/runs", params={"repo": repo})
    assert r.status_code == 200, r.text
    return list(r.json())


def run_detail(server: ServerHandle, run_id: int) -> dict[str, Any]:
    r = server.api().get(f"/api/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for_run(server: ServerHandle, repo: str, sha: str, pipeline: str, *, finished: bool = True,
                 state: str | None = None, limit: float = 600) -> dict[str, Any]:
    """The newest run of ``pipeline`` at ``sha``, once it exists (and has finished / reached ``state``).

    The limit only keeps a broken engine from hanging the suite; nothing asserts on durations.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = [r for r in runs(server, repo) if r["sha"] == sha and r["pipeline"] == pipeline]
        if found:
            run = found[0]
            if state is not None and run["state"] == state:
                return run_detail(server, run["id"])
            if state is None and (not finished or run["state"] in FINISHED):
                return run_detail(server, run["id"])
        time.sleep(0.2)
    raise AssertionError(f"no {'finished ' if finished else ''}{pipeline} run of {repo}@{sha[:12]} appeared")


def log_text(server: ServerHandle, run_id: int) -> str:
    r = server.api().get(f"/api/v1/runs/{run_id}/logs", params={"format": "text", "limit": 10000})
    assert r.status_code == 200, r.text
    return r.text


def status_of(server: ServerHandle, repo: str, sha: str, context: str) -> dict[str, Any] | None:
    r = server.api().get(f"/api/v1/repos/{repo}/statuses/{sha}")
    assert r.status_code == 200, r.text
    for s in r.json()["statuses"]:
        if s["context"] == context:
            return dict(s)
    return None


def wait_for_status(server: ServerHandle, repo: str, sha: str, context: str, state: str,
                    limit: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    seen = None
    while time.monotonic() < deadline:
        seen = status_of(server, repo, sha, context)
        if seen is not None and seen["state"] == state:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{context} on {sha[:12]} never became {state}; last: {seen}")

"""Fetch a sync's branch with the real git client: shallow, one branch, revision = commit SHA."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


class SourceError(Exception):
    """git could not fetch the branch (unreachable server, bad credentials, missing branch)."""


@dataclass(frozen=True)
class Artifact:
    revision: str
    root: Path  # checkout of the revision; the sync's path is relative to it


def redact(text: str) -> str:
    """Hide credentials embedded in URLs (https://user:token@host) before they reach logs or statuses."""
    return re.sub(r"(://[^/@\s:]+):[^/@\s]+@", r"\1:***@", text)


def _git(args: list[str], cwd: Path, timeout: float, token: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_ASKPASS="true")
    if token:  # the agent's own token, in the environment rather than on the command line or in the URL
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Bearer {token}")
    try:
        p = subprocess.run(
            ["git", "-c", "advice.detachedHead=false", *args],
            cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"git {args[0]} timed out after {timeout:.0f}s") from exc
    if p.returncode != 0:
        raise SourceError(redact(f"git {args[0]} failed: {(p.stderr or p.stdout).strip()}"))
    return p.stdout


class GitSource:
    """One working directory per sync under the agent's state dir; fetches replace its content."""

    def __init__(self, url: str, branch: str, workdir: Path, timeout: float = 60.0, token: str | None = None) -> None:
        self.url, self.branch, self.workdir, self.timeout = url, branch, workdir, timeout
        self.token = token  # sent to the forge (the sync's URL has no credentials of its own)

    def remote_revision(self) -> str:
        """The branch head on the server, without fetching objects (cheap check for a newer revision)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = _git(["ls-remote", self.url, f"refs/heads/{self.branch}"], self.workdir, self.timeout, self.token)
        if not out.strip():
            raise SourceError(f"branch {self.branch} not found")
        return out.split()[0]

    def fetch(self) -> Artifact:
        wd = self.workdir
        if not (wd / ".git").exists():
            wd.mkdir(parents=True, exist_ok=True)
            _git(["init", "-q"], wd, self.timeout)
        _git(["fetch", "-q", "--depth=1", "--no-tags", self.url, f"refs/heads/{self.branch}"], wd, self.timeout,
             self.token)
        revision = _git(["rev-parse", "FETCH_HEAD"], wd, self.timeout).strip()
        _git(["checkout", "-q", "--force", "--detach", revision], wd, self.timeout)
        _git(["clean", "-q", "-fdx"], wd, self.timeout)
        return Artifact(revision=revision, root=wd)

"""Helpers for forge tests: working copies driven by the real git client."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.support.server import ServerHandle, git


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class WorkingCopy:
    def __init__(self, server: ServerHandle, repo: str, path: Path, user: str = "admin", token: str | None = None):
        self.server, self.repo, self.path = server, repo, path
        git("clone", "-q", server.git_url(repo, user, token), str(path))

    def git(self, *args: str, check: bool = True) -> str:
        return str(git(*args, cwd=self.path, check=check).stdout)

    def run(self, *args: str) -> tuple[int, str]:
        p = git(*args, cwd=self.path, check=False)
        return p.returncode, p.stdout + p.stderr

    def commit_file(self, name: str, content: str, message: str | None = None) -> str:
        f = self.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(content)
        self.git("add", name)
        self.git("commit", "-q", "-m", message or f"write {name}")
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def push(self, branch: str, *extra: str) -> tuple[int, str]:
        return self.run("push", *extra, "origin", f"HEAD:refs/heads/{branch}")


def new_repo(server: ServerHandle, tmp: Path, name: str | None = None, kind: str = "app") -> WorkingCopy:
    """A repository with one commit on main, cloned into ``tmp`` (kind gitops: readable by cluster agents)."""
    name = name or unique("app")
    r = server.api().post("/api/v1/repos", json={"name": name, "kind": kind})
    assert r.status_code == 201, r.text
    wc = WorkingCopy(server, name, tmp / name)
    wc.git("checkout", "-q", "-b", "main")
    wc.commit_file("README.md", "hello\n", "initial")
    code, out = wc.push("main")
    assert code == 0, out
    return wc

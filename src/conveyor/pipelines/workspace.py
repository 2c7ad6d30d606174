"""A run's workspace: a fresh directory holding exactly the run's commit.

A worker on the server's machine fetches straight from the bare repository; a worker elsewhere
fetches over the server's smart HTTP with the service token.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conveyor.core import Settings


class CheckoutError(RuntimeError):
    pass


def _git(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", HOME=str(cwd))
    env.update(extra_env or {})
    p = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise CheckoutError(f"git {args[0]} failed: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def checkout(settings: Settings, repo_name: str, sha: str, dest: Path, token: str) -> str:
    """Populate ``dest`` (emptied first) with ``sha``; returns where it was fetched from."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _git(["init", "-q"], dest)
    local = settings.repos_dir / f"{repo_name}.git"
    extra: dict[str, str] = {}
    if local.is_dir():
        source = str(local)
    else:
        source = f"{settings.base_url}/git/{repo_name}.git"
        extra = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                 "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {token}"}
    _git(["fetch", "-q", "--depth", "1", source, sha], dest, extra)
    _git(["-c", "advice.detachedHead=false", "checkout", "-q", sha], dest)
    return source

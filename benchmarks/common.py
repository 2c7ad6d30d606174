"""Shared benchmark helpers: run a Conveyor server, time things, print ratio tables."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.postgres import free_port  # noqa: E402
from tests.support.server import ServerHandle  # noqa: E402


@contextmanager
def conveyor_server(tmp: Path, database_url: str | None = None, remote: bool = False) -> Iterator[ServerHandle]:
    """A server; ``remote``: without its own runner (runs wait for a separate ``conveyor runner``)."""
    env = {"CONVEYOR_PIPELINE_WORKERS": "0"} if remote else {}
    handle = ServerHandle(data_dir=tmp / "conveyor-data", database_url=database_url, extra_env=env).start()
    try:
        yield handle
    finally:
        handle.stop()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of(n: int, fn: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    samples = []
    for _ in range(n):
        if before:
            before()
        samples.append(timed(fn))
    return statistics.median(samples)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def print_table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("measure", "Conveyor", "anchor", "ratio (Conveyor/anchor)", title=title)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@example.invalid", GIT_TERMINAL_PROMPT="0")
    return env


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=git_env()).stdout


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


__all__ = ["conveyor_server", "free_port", "git", "median_of", "percentile", "print_table", "timed", "wait_http"]

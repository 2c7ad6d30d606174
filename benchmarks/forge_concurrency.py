"""Forge under concurrency: 20 clients at once doing `git ls-remote`, `git clone` and `git push`
through Conveyor versus the same against plain `git http-backend` behind the minimal CGI server
(benchmarks/plain_git_cgi_server.py), in one run; p50/p95 per operation and the ratio.

Target (issue 13): p95 within 1.5x of the anchor. Conveyor authenticates every request (HTTP
basic with an API token), runs its pre-receive protection hook and records every push before the
push's response ends; the anchor does none of that.

Run: python benchmarks/forge_concurrency.py [--clients 20] [--rounds 3] [--files 200] [--database-url URL]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import conveyor_server, free_port, git, git_env, percentile, print_table, wait_http  # noqa: E402


def make_source(path: Path, files: int) -> None:
    git("init", "-q", "-b", "main", str(path))
    for i in range(files):
        d = path / f"pkg{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.txt").write_text(f"file {i}\n" * 50)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "import", cwd=path)


def run_git(*args: str, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=git_env())
    if p.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:2])} failed: {p.stderr.strip()[-400:]}")
    return time.perf_counter() - started


def concurrently(clients: int, rounds: int, op: Callable[[int, int], float]) -> list[float]:
    """``clients`` threads, each doing ``rounds`` operations back to back; every latency."""
    def worker(c: int) -> list[float]:
        return [op(c, r) for r in range(rounds)]

    with ThreadPoolExecutor(clients) as pool:
        return [t for ts in pool.map(worker, range(clients)) for t in ts]


class Side:
    """One server under test: its repository URL and the clients' working copies."""

    def __init__(self, name: str, url: str, source: Path, work: Path, clients: int) -> None:
        self.name, self.url, self.work = name, url, work
        work.mkdir(parents=True)
        run_git("push", "-q", url, "main", cwd=source)
        self.copies = []
        for c in range(clients):
            dest = work / f"wc-{c}"
            shutil.copytree(source, dest)
            self.copies.append(dest)
        self.samples: dict[str, list[float]] = {"ls-remote alone": [run_git("ls-remote", url) for _ in range(10)]}

    def ls_remote(self, c: int, r: int) -> float:
        return run_git("ls-remote", self.url)

    def clone(self, c: int, r: int) -> float:
        dest = self.work / f"clone-{c}-{r}"
        t = run_git("clone", "-q", self.url, str(dest))
        shutil.rmtree(dest)
        return t

    def push(self, c: int, r: int) -> float:
        wc = self.copies[c]
        (wc / f"client-{c}.txt").write_text(f"round {r}\n")
        git("add", "-A", cwd=wc)
        git("commit", "-q", "-m", f"client {c} round {r}", cwd=wc)
        return run_git("push", "-q", self.url, f"HEAD:refs/heads/client-{c}", cwd=wc)


OPS = {"ls-remote": (Side.ls_remote, 3), "clone": (Side.clone, 1), "push": (Side.push, 1)}


def compare(sides: list[Side], clients: int, rounds: int) -> None:
    """Each phase with all clients at once, the two sides taking turns (in alternating order),
    so that load from the rest of the machine falls on both alike."""
    for op, (fn, per_round) in OPS.items():
        for r in range(rounds):
            for side in sides if r % 2 == 0 else reversed(sides):
                side.samples.setdefault(op, []).extend(
                    concurrently(clients, per_round, lambda c, i, s=side, r=r, f=fn, n=per_round: f(s, c, r * n + i)))


def start_anchor(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    root = tmp / "plain-root"
    root.mkdir()
    git("init", "-q", "--bare", str(root / "bench.git"))
    git("config", "http.receivepack", "true", cwd=root / "bench.git")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "plain_git_cgi_server.py"), str(root),
                             str(port)])
    wait_http(f"http://127.0.0.1:{port}/")
    return proc, f"http://127.0.0.1:{port}/bench.git"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--database-url", default=None, help="PostgreSQL for Conveyor (default: SQLite)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp_s:
        tmp = Path(tmp_s)
        source = tmp / "source"
        make_source(source, args.files)
        anchor_proc, anchor_url = start_anchor(tmp)
        try:
            with conveyor_server(tmp, args.database_url) as server:
                httpx.post(f"{server.url}/api/v1/repos", json={"name": "bench"},
                           headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30).raise_for_status()
                sides = [Side("Conveyor", server.git_url("bench"), source, tmp / "conveyor-work", args.clients),
                         Side("anchor", anchor_url, source, tmp / "plain-work", args.clients)]
                compare(sides, args.clients, args.rounds)
        finally:
            anchor_proc.terminate()
            anchor_proc.wait(10)
            log = tmp / "conveyor-data.log"
            if log.exists():
                shutil.copy(log, Path(tempfile.gettempdir()) / "forge_concurrency-server.log")
        conveyor, anchor = sides[0].samples, sides[1].samples
    alone = [statistics.median(side["ls-remote alone"]) for side in (conveyor, anchor)]
    rows: list[tuple[str, str, str, str]] = [
        ("ls-remote alone, median", f"{alone[0] * 1000:.0f} ms", f"{alone[1] * 1000:.0f} ms",
         f"{alone[0] / alone[1]:.2f}x"),
    ]
    worst = 0.0
    for op in ("ls-remote", "clone", "push"):
        for p in (50, 95):
            c, a = percentile(conveyor[op], p), percentile(anchor[op], p)
            ratio = c / a
            if p == 95:
                worst = max(worst, ratio)
            rows.append((f"{op} p{p} ({args.clients} concurrent, n={len(conveyor[op])})",
                         f"{c * 1000:.0f} ms", f"{a * 1000:.0f} ms", f"{ratio:.2f}x"))
    print_table("Forge under concurrency: Conveyor vs git http-backend behind a minimal CGI server", rows)
    print(f"worst p95 ratio: {worst:.2f}x (target: within 1.5x)")


if __name__ == "__main__":
    main()

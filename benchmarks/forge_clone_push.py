"""Forge benchmark: clone and push of a ~50 MB / 5,000-file repository through Conveyor versus a bare
`git http-backend` behind a minimal CGI server, in one run; plus PR merge latency over 100 merges.

Run: python benchmarks/forge_clone_push.py [--files 5000] [--size-mb 50] [--merges 100]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    conveyor_server,
    free_port,
    git,
    percentile,
    print_table,
    timed,
    wait_http,
)


def make_source_repo(path: Path, files: int, size_mb: int) -> None:
    rng = random.Random(42)
    words = [f"{rng.getrandbits(40):x}" for _ in range(4000)]
    per_file = size_mb * 1024 * 1024 // files
    git("init", "-q", "-b", "main", str(path))
    for i in range(files):
        d = path / f"pkg{i % 50:02d}" / f"mod{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        text = []
        n = 0
        while n < per_file:
            w = rng.choice(words)
            text.append(w)
            n += len(w) + 1
        (d / f"file{i:05d}.txt").write_text(" ".join(text))
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "import", cwd=path)


class Remote:
    """One side of the comparison: how to get a fresh empty repository URL."""

    def __init__(self, name: str, fresh_url: Callable[[], str]) -> None:
        self.name, self.fresh_url = name, fresh_url
        self.push_times: list[float] = []
        self.clone_times: list[float] = []
        self.last_url = ""


def measure_interleaved(src: Path, remotes: list[Remote], work: Path, runs: int) -> None:
    """Alternate the sides run by run so background load hits both alike."""
    for _ in range(runs):
        for r in remotes:
            url = r.fresh_url()
            r.push_times.append(timed(lambda url=url: git("push", "-q", url, "main", cwd=src)))
            r.last_url = url
    for _ in range(runs):
        for r in remotes:
            dest = work / f"clone-{r.name}"
            shutil.rmtree(dest, ignore_errors=True)
            r.clone_times.append(timed(lambda r=r, dest=dest: git("clone", "-q", r.last_url, str(dest))))
            shutil.rmtree(dest, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--merges", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-forge-"))
    try:
        src = tmp / "src"
        t0 = time.perf_counter()
        make_source_repo(src, args.files, args.size_mb)
        pack = subprocess.run(["du", "-sh", str(src / ".git")], capture_output=True, text=True).stdout.split()[0]
        print(f"source repository: {args.files} files, ~{args.size_mb} MB of text, .git {pack} "
              f"(made in {time.perf_counter() - t0:.1f}s)")

        # Anchor: plain git http-backend behind a minimal CGI server.
        plain_root = tmp / "plain"
        plain_root.mkdir()
        port = free_port()
        anchor = subprocess.Popen([sys.executable, str(Path(__file__).parent / "plain_git_cgi_server.py"),
                                   str(plain_root), str(port)], stderr=subprocess.DEVNULL)
        n_plain = iter(range(1000))

        def fresh_plain() -> str:
            path = plain_root / f"r{next(n_plain)}.git"
            git("init", "-q", "--bare", "-b", "main", str(path))
            git("--git-dir", str(path), "config", "http.receivepack", "true")
            return f"http://127.0.0.1:{port}/{path.name}"

        try:
            wait_http(f"http://127.0.0.1:{port}/")
            with conveyor_server(tmp) as server:
                api = server.api()
                n_conv = iter(range(1000))

                def fresh_conveyor() -> str:
                    name = f"r{next(n_conv)}"
                    api.post("/api/v1/repos", json={"name": name}).raise_for_status()
                    return server.git_url(name)

                conveyor, plain = Remote("conveyor", fresh_conveyor), Remote("anchor", fresh_plain)
                measure_interleaved(src, [conveyor, plain], tmp, args.runs)
                latencies = merge_latencies(server, tmp, args.merges)
        finally:
            anchor.terminate()

        push_c, push_a = statistics.median(conveyor.push_times), statistics.median(plain.push_times)
        clone_c, clone_a = statistics.median(conveyor.clone_times), statistics.median(plain.clone_times)
        rows = [
            ("push (median)", f"{push_c:.2f}s", f"{push_a:.2f}s", f"{push_c / push_a:.2f}x"),
            ("clone (median)", f"{clone_c:.2f}s", f"{clone_a:.2f}s", f"{clone_c / clone_a:.2f}x"),
        ]
        print_table("Forge: Conveyor vs git http-backend behind a minimal CGI server (target <= 1.2x)", rows)
        print(f"PR merge latency over {len(latencies)} merges: p50 {percentile(latencies, 50) * 1000:.0f} ms, "
              f"p95 {percentile(latencies, 95) * 1000:.0f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merge_latencies(server: object, tmp: Path, n: int) -> list[float]:
    from tests.support.server import ServerHandle

    assert isinstance(server, ServerHandle)
    api = server.api()
    api.post("/api/v1/repos", json={"name": "merges"}).raise_for_status()
    wc = tmp / "merges"
    git("clone", "-q", server.git_url("merges"), str(wc))
    git("checkout", "-q", "-b", "main", cwd=wc)
    (wc / "base.txt").write_text("base\n")
    git("add", "-A", cwd=wc)
    git("commit", "-q", "-m", "base", cwd=wc)
    git("push", "-q", "origin", "main", cwd=wc)
    for i in range(n):
        git("checkout", "-q", "-B", f"b{i}", "main", cwd=wc)
        (wc / f"f{i}.txt").write_text(f"{i}\n")
        git("add", "-A", cwd=wc)
        git("commit", "-q", "-m", f"change {i}", cwd=wc)
    git("push", "-q", "origin", *[f"b{i}" for i in range(n)], cwd=wc)
    numbers = [api.post("/api/v1/repos/merges/pulls", json={"source": f"b{i}", "target": "main", "title": f"c{i}"}
                        ).json()["number"] for i in range(n)]
    out = []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"},
                      timeout=60) as c:
        for num in numbers:
            start = time.perf_counter()
            c.post(f"/api/v1/repos/merges/pulls/{num}/merge", json={"method": "merge"}).raise_for_status()
            out.append(time.perf_counter() - start)
    return out


if __name__ == "__main__":
    main()

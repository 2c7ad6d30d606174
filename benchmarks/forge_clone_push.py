"""Forge benchmark: clone and push of a ~50 MB / 5,000-file repository through Conveyor versus a bare
`git http-backend` behind a minimal CGI server, in one run; plus PR merge latency over 100 merges.

Run: python benchmarks/forge_clone_push.py [--files 5000] [--size-mb 50] [--merges 100]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    conveyor_server,
    free_port,
    git,
    median_of,
    percentile,
    print_table,
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


def bench_remote(src: Path, url: str, reset_remote: callable, work: Path, runs: int) -> tuple[float, float]:  # type: ignore[valid-type]
    def push() -> None:
        git("push", "-q", url, "main", cwd=src)

    push_t = median_of(runs, push, before=reset_remote)
    clone_dir = work / "clone"

    def clone() -> None:
        git("clone", "-q", url, str(clone_dir))

    clone_t = median_of(runs, clone, before=lambda: shutil.rmtree(clone_dir, ignore_errors=True))
    shutil.rmtree(clone_dir, ignore_errors=True)
    return push_t, clone_t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--merges", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
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
                                   str(plain_root), str(port)])
        try:
            wait_http(f"http://127.0.0.1:{port}/")

            def reset_plain() -> None:
                shutil.rmtree(plain_root / "r.git", ignore_errors=True)
                git("init", "-q", "--bare", str(plain_root / "r.git"))
                git("--git-dir", str(plain_root / "r.git"), "config", "http.receivepack", "true")

            plain = bench_remote(src, f"http://127.0.0.1:{port}/r.git", reset_plain, tmp, args.runs)
        finally:
            anchor.terminate()

        with conveyor_server(tmp) as server:
            api = server.api()
            counter = iter(range(1000))

            def reset_conveyor() -> None:
                name = f"r{next(counter)}"
                api.post("/api/v1/repos", json={"name": name}).raise_for_status()
                reset_conveyor.url = server.git_url(name)  # type: ignore[attr-defined]

            reset_conveyor()
            urls: list[str] = []

            def push_conveyor() -> None:
                git("push", "-q", reset_conveyor.url, "main", cwd=src)  # type: ignore[attr-defined]
                urls.append(reset_conveyor.url)  # type: ignore[attr-defined]

            push_t = median_of(args.runs, push_conveyor, before=reset_conveyor)
            clone_dir = tmp / "cclone"
            clone_t = median_of(args.runs, lambda: git("clone", "-q", urls[-1], str(clone_dir)),
                                before=lambda: shutil.rmtree(clone_dir, ignore_errors=True))
            latencies = merge_latencies(server, tmp, args.merges)

        rows = [
            ("push (median)", f"{push_t:.2f}s", f"{plain[0]:.2f}s", f"{push_t / plain[0]:.2f}x"),
            ("clone (median)", f"{clone_t:.2f}s", f"{plain[1]:.2f}s", f"{clone_t / plain[1]:.2f}x"),
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

"""Pipelines benchmark: event-to-first-step latency and the runner's own overhead per step.

Each of ``--runs`` pushes to the default branch of a repository whose ``ci`` pipeline is 20
``run: true`` steps, each in a container of the tests' busybox shell image. Latency is measured from
the end of the push (the event is recorded before the push's response ends) to the start of the
first step, on one machine's clock, for the server's own runner and (``--remote``) for a separate
``conveyor runner`` process that holds only the URL and a runner token, claiming over HTTP. The
overhead per step is the run's step time divided by 20, minus what ``podman run ... true`` costs
here on its own. Targets: < 1 s scheduling latency, < 100 ms overhead per step.

With ``--image-builds N`` it also runs the sample app's CI N times and reports how long the
``image-build`` step takes, the first build against the later ones that reuse buildah's layer cache.

Run: python benchmarks/pipeline_latency.py [--runs 10] [--remote] [--image-builds 0] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import ServerHandle  # noqa: E402

from benchmarks.common import conveyor_server, git, percentile, print_table  # noqa: E402

STEPS = 20
PIPELINE = "ci:\n" + "".join(f"  - name: s{i}\n    run: 'true'\n" for i in range(STEPS))


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def wait_run(server: ServerHandle, repo: str, sha: str, limit: float = 900) -> dict[str, Any]:
    api = server.api()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for r in api.get("/api/v1/runs", params={"repo": repo, "limit": 5}).json():
            if r["sha"] == sha and r["state"] in ("success", "failure", "error", "cancelled"):
                return dict(api.get(f"/api/v1/runs/{r['id']}").json())
        time.sleep(0.05)
    raise RuntimeError(f"run of {sha} did not finish")


def spawn_baseline(server: ServerHandle, n: int = 10) -> float:
    """What one bare ``podman run --rm IMAGE true`` costs here (the image already pulled)."""
    from conveyor.core import containers

    root = str(server.data_dir / "pipelines" / "containers")
    image = f"127.0.0.1:{server.port}/cache/shell:1"
    pull = containers.podman("pull", "--tls-verify=false", "--creds", f"admin:{server.admin_token}", image, root=root)
    subprocess.run(pull, check=True, capture_output=True)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(containers.podman("run", "--rm", "--network", "none", image, "true", root=root), check=True,
                       capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def remote_runner(server: ServerHandle, tmp: Path) -> subprocess.Popen[bytes]:
    token = server.api().post("/api/v1/runners", json={"name": "bench-remote"}).json()["token"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.Popen([sys.executable, "-m", "conveyor", "runner", "--server", server.url, "--token", token,
                             "--work-dir", str(tmp / "runner"), "--default-image", "cache/shell:1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def step_runs(server: ServerHandle, tmp: Path, n: int) -> tuple[list[float], list[float], list[float]]:
    server.api().post("/api/v1/repos", json={"name": "bench"}).raise_for_status()
    wc = tmp / "bench"
    git("clone", "-q", server.git_url("bench"), str(wc))
    git("checkout", "-q", "-b", "main", cwd=wc)
    (wc / ".conveyor").mkdir()
    (wc / ".conveyor/pipeline.yaml").write_text(PIPELINE)
    latencies, per_step, claim = [], [], []
    for i in range(n):
        (wc / "n.txt").write_text(f"{i}\n")
        git("add", "-A", cwd=wc)
        git("commit", "-q", "-m", f"run {i}", cwd=wc)
        sha = git("rev-parse", "HEAD", cwd=wc).strip()
        git("push", "-q", "origin", "main", cwd=wc)
        pushed = time.time()
        run = wait_run(server, "bench", sha)
        assert run["state"] == "success", run
        steps = [s for s in run["steps"] if s["kind"] == "run"]
        latencies.append(ts(steps[0]["started_at"]) - pushed)
        claim.append(ts(run["started_at"]) - ts(run["queued_at"]))
        per_step.append((ts(steps[-1]["finished_at"]) - ts(steps[0]["started_at"])) / len(steps))
    return latencies, per_step, claim


def image_builds(server: ServerHandle, tmp: Path, n: int) -> list[float]:
    p = subprocess.run([sys.executable, "-m", "conveyor", "image", "base"], env=server.env(), capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    server.api().post("/api/v1/repos", json={"name": "hello"}).raise_for_status()
    wc = tmp / "hello"
    git("clone", "-q", server.git_url("hello"), str(wc))
    shutil.copytree(Path(__file__).resolve().parent.parent / "examples" / "hello", wc, dirs_exist_ok=True)
    git("checkout", "-q", "-b", "main", cwd=wc)
    durations = []
    for i in range(n):
        (wc / "BUILD").write_text(f"{i}\n")  # outside the image's build context files: layers stay cached
        git("add", "-A", cwd=wc)
        git("commit", "-q", "-m", f"build {i}", cwd=wc)
        sha = git("rev-parse", "HEAD", cwd=wc).strip()
        git("push", "-q", "origin", "main", cwd=wc)
        run = wait_run(server, "hello", sha, limit=1800)
        step = next(s for s in run["steps"] if s["name"] == "image-build")
        if run["state"] != "success":
            raise RuntimeError(f"hello CI failed at {run['failed_step']}: {run['message']}")
        durations.append(ts(step["finished_at"]) - ts(step["started_at"]))
    return durations


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--image-builds", type=int, default=0)
    ap.add_argument("--remote", action="store_true", help="a separate runner process over HTTP, not the server's")
    ap.add_argument("--postgres", action="store_true", help="use a throwaway PostgreSQL instead of SQLite")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipelines-"))
    pg = None
    try:
        url = None
        if args.postgres:
            from tests.support.postgres import PostgresServer

            pg = PostgresServer().start()
            url = pg.create_database()
        with conveyor_server(tmp, url, remote=args.remote) as server:
            from tests.support.images import ensure_shell_image

            ensure_shell_image(server)
            baseline = spawn_baseline(server)
            runner = remote_runner(server, tmp) if args.remote else None
            try:
                latencies, per_step, claim = step_runs(server, tmp, args.runs)
                builds = image_builds(server, tmp, args.image_builds) if args.image_builds else []
            finally:
                if runner is not None:
                    runner.terminate()
                    runner.wait(30)
        overhead = [max(0.0, s - baseline) for s in per_step]
        lat50, lat95 = percentile(latencies, 50), percentile(latencies, 95)
        ov50, ov95 = percentile(overhead, 50), percentile(overhead, 95)
        rows = [
            ("event -> first step, p50", f"{lat50 * 1000:.0f} ms", "1000 ms", f"{lat50:.2f}x"),
            ("event -> first step, p95", f"{lat95 * 1000:.0f} ms", "1000 ms", f"{lat95:.2f}x"),
            ("queued -> claimed, p50", f"{percentile(claim, 50) * 1000:.0f} ms", "-", "-"),
            ("engine overhead per step, p50", f"{ov50 * 1000:.0f} ms", "100 ms", f"{ov50 / 0.1:.2f}x"),
            ("engine overhead per step, p95", f"{ov95 * 1000:.0f} ms", "100 ms", f"{ov95 / 0.1:.2f}x"),
            ("(podman run true on this machine)", f"{baseline * 1000:.1f} ms", "-", "-"),
        ]
        db = "PostgreSQL" if args.postgres else "SQLite"
        print_table(f"Pipelines ({db}): {args.runs} runs of {STEPS} `run: true` steps; anchor = target", rows)
        if builds:
            later = statistics.median(builds[1:]) if len(builds) > 1 else float("nan")
            print(f"image-build step of examples/hello: first {builds[0]:.1f}s, later (layer cache) "
                  f"median {later:.1f}s over {len(builds) - 1} build(s)")
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Pipelines benchmark: wall time of the sample app's PR and CI pipelines with `needs:` against the same
steps forced to run one after another, in one run, warm (base image, layer cache and step images
already present: every measured run follows an unmeasured one of the same kind).

The sequential variant is ``examples/hello/.conveyor/pipeline.yaml`` with every ``needs`` removed,
which the engine runs in file order. Runs alternate (DAG, sequential, DAG, ...) so background load
hits both. Targets (issue 15): PR pipeline <= 20 s warm, and <= 0.6x the sequential time.

Run: python benchmarks/pipeline_wall.py [--rounds 2] [--pipelines pr,ci]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import ServerHandle  # noqa: E402

from benchmarks.common import ROOT, conveyor_server, git, print_table  # noqa: E402
from benchmarks.pipeline_latency import ts, wait_run  # noqa: E402


def sequential(text: str) -> str:
    data = yaml.safe_load(text)
    for name in ("pr", "ci"):
        for step in data.get(name) or []:
            step.pop("needs", None)
    return yaml.safe_dump(data, sort_keys=False)


def setup(server: ServerHandle, tmp: Path) -> Path:
    p = subprocess.run([sys.executable, "-m", "conveyor", "image", "base"], env=server.env(), capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    server.api().post("/api/v1/repos", json={"name": "hello"}).raise_for_status()
    wc = tmp / "hello"
    git("clone", "-q", server.git_url("hello"), str(wc))
    shutil.copytree(ROOT / "examples" / "hello", wc, dirs_exist_ok=True)
    git("checkout", "-q", "-b", "main", cwd=wc)
    git("add", "-A", cwd=wc)
    git("commit", "-q", "-m", "hello", cwd=wc)
    git("push", "-q", "origin", "main", cwd=wc)
    wait_run(server, "hello", git("rev-parse", "HEAD", cwd=wc).strip(), limit=1800)  # warms every cache
    return wc


def one(server: ServerHandle, wc: Path, pipeline_text: str, pipeline: str, n: int) -> float:
    """Push a branch (pr) or main (ci) with this pipeline file; the run's wall time (first step to end)."""
    (wc / ".conveyor" / "pipeline.yaml").write_text(pipeline_text)
    (wc / "BUILD").write_text(f"{n}\n")
    branch = "main" if pipeline == "ci" else f"bench-{n}"
    git("checkout", "-q", "-B", branch, cwd=wc)
    git("add", "-A", cwd=wc)
    git("commit", "-q", "-m", f"bench {n}", cwd=wc)
    sha = git("rev-parse", "HEAD", cwd=wc).strip()
    git("push", "-q", "-f", "origin", branch, cwd=wc)
    if pipeline == "pr":
        server.api().post("/api/v1/repos/hello/pulls", json={"source": branch, "target": "main",
                                                               "title": f"bench {n}"}).raise_for_status()
    run = wait_run(server, "hello", sha, limit=1800)
    if run["state"] != "success":
        raise RuntimeError(f"{pipeline} run failed at {run['failed_step']}: {run['message']}")
    git("checkout", "-q", "main", cwd=wc)
    return ts(run["finished_at"]) - ts(run["started_at"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pipelines", default="pr,ci")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-wall-"))
    dag_text = (ROOT / "examples" / "hello" / ".conveyor" / "pipeline.yaml").read_text()
    seq_text = sequential(dag_text)
    rows = []
    with conveyor_server(tmp) as server:
        wc = setup(server, tmp)
        n = 0
        for pipeline in args.pipelines.split(","):
            for text in (dag_text, seq_text):  # unmeasured: warm this variant's caches
                n += 1
                one(server, wc, text, pipeline, n)
            dag, seq = [], []
            for _ in range(args.rounds):
                for text, out in ((dag_text, dag), (seq_text, seq)):
                    n += 1
                    out.append(one(server, wc, text, pipeline, n))
            d, q = statistics.median(dag), statistics.median(seq)
            rows.append((f"{pipeline} pipeline wall time (median of {args.rounds})", f"{d:.1f} s (needs: DAG)",
                         f"{q:.1f} s (sequential)", f"{d / q:.2f}x"))
    print_table("hello's pipelines, warm: needs: DAG vs the same steps in order", rows)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

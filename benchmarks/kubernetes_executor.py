"""Kubernetes executor benchmark: the same pipeline on a podman runner and on a kubernetes runner.

One server without a runner of its own, one local cluster forwarding its port, and two ``conveyor
runner`` processes (``--executor podman`` and ``--executor kubernetes --cluster bench``), each with a
label of its own. ``--runs`` times each, a repository's ``ci`` of ``STEPS`` ``run:`` steps (the tests'
busybox image; the second step reads a file the first wrote) goes to each runner in turn. Reported per
executor: the run's wall time (started -> finished, the server's clock) and its setup step; for the
kubernetes runner the difference is the pod's cost (create, the ``checkout`` init container, status
polls), against the podman runner's container per step. The image is pulled once before timing.

Measured here (2 shared cores, 3 runs each): podman 2.21 s per run (0.42 s a step), kubernetes 6.47 s
(1.28 s a step), a ratio of 2.9. Likely, not measured apart: the kubelet starts the next init container
only once its 1 s PLEG relist saw the previous one exit.

Run: python benchmarks/kubernetes_executor.py [--runs 5]
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
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pipelines.helpers import repo_with_pipeline, wait_for_run  # noqa: E402
from tests.support.server import ServerHandle  # noqa: E402

from benchmarks.common import conveyor_server  # noqa: E402
from conveyor.clusters import local  # noqa: E402

STEPS = 5


def pipeline(label: str) -> str:
    steps = "".join(f"    - name: s{i}\n      run: echo step {i} >> steps.txt; cat steps.txt\n" for i in range(STEPS))
    return f"ci:\n  runs-on: [{label}]\n  steps:\n{steps}"


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def runner(server: ServerHandle, tmp: Path, label: str, *extra: str) -> subprocess.Popen[bytes]:
    token = server.api().post("/api/v1/runners", json={"name": label, "labels": [label]}).json()["token"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_DATA_DIR"] = str(tmp / "clusters")
    log = open(tmp / f"{label}.log", "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "conveyor", "runner", "--server", server.url, "--token", token,
                             "--concurrency", "1", "--work-dir", str(tmp / label), "--default-image",
                             "cache/shell:1", *extra], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def one_run(server: ServerHandle, tmp: Path, label: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(dir=tmp))
    wc, sha = repo_with_pipeline(server, work, pipeline(label))
    run = wait_for_run(server, wc.repo, sha, "ci")
    if run["state"] != "success":
        raise RuntimeError(f"{label}: run {run['id']} {run['state']}: {run['message']}")
    return run


def measure(server: ServerHandle, tmp: Path, label: str, runs: int) -> dict[str, float]:
    one_run(server, tmp, label)  # pulls the image, warms caches
    walls, setups = [], []
    for _ in range(runs):
        run = one_run(server, tmp, label)
        walls.append(ts(run["finished_at"]) - ts(run["started_at"]))
        setup = run["steps"][0]
        setups.append(ts(setup["finished_at"]) - ts(setup["started_at"]))
    return {"wall": statistics.median(walls), "setup": statistics.median(setups)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cnv-kx-", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with conveyor_server(tmp, remote=True) as server:
            local.create(tmp / "clusters", "bench", registries=[f"127.0.0.1:{server.port}"],
                         progress=lambda line: print(line, file=sys.stderr))
            tag = uuid.uuid4().hex[:6]
            procs.append(runner(server, tmp, f"podman-{tag}", "--executor", "podman"))
            procs.append(runner(server, tmp, f"kube-{tag}", "--executor", "kubernetes", "--cluster", "bench"))
            time.sleep(3)
            results = {name: measure(server, tmp, f"{name}-{tag}", args.runs) for name in ("podman", "kube")}
            print(f"{STEPS} run: steps, median of {args.runs} runs each")
            for name, r in results.items():
                print(f"  {name:<7} run wall {r['wall']:.2f} s   setup step {r['setup']:.2f} s   "
                      f"per step {(r['wall'] - r['setup']) / STEPS:.2f} s")
            print(f"  kubernetes/podman wall ratio {results['kube']['wall'] / results['podman']['wall']:.2f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        local.delete(tmp / "clusters", "bench", force=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

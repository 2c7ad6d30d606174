"""Local cluster benchmark (binaries cached): create -> API healthy -> node Ready, a 3-replica
Deployment of a ~2 MB image pulled from Conveyor's registry -> Available, and the resident memory of
the idle cluster (all its processes, containers included) after it settles.

Targets: node Ready < 30 s, Deployment Available < 20 s, idle memory < 1.5 GB per cluster.

Run: python benchmarks/cluster_startup.py [--settle 30]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.clusters import (  # noqa: E402
    ClusterHandle,
    build_hello_image,
    deployment,
    deployment_available,
    push_image,
)
from tests.support.server import ServerHandle  # noqa: E402

from conveyor.clusters import local, node  # noqa: E402
from conveyor.clusters.binaries import ensure_binaries  # noqa: E402
from conveyor.clusters.layout import Layout  # noqa: E402
from conveyor.clusters.processes import pids_with_arg  # noqa: E402


def rss_bytes(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if m:
            total += int(m.group(1)) * 1024
    return total


def cluster_pids(home: Path, handle: ClusterHandle) -> set[int]:
    layout = Layout(home, handle.spec)
    group = local.processes_of(layout)
    pids = {pid for p in local.PROCESS_ORDER if (pid := group.pid(p)) is not None}
    pids |= set(pids_with_arg(str(layout.containerd_socket)))  # shims
    pids |= set(node.cgroup_pids(handle.spec.cgroup_root))  # containers
    return pids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settle", type=float, default=30.0, help="seconds to let the idle cluster settle")
    args = ap.parse_args()
    t = time.monotonic()
    ensure_binaries(progress=lambda line: print(line, file=sys.stderr))
    print(f"binaries ready in {time.monotonic() - t:.1f}s (cached if ~0)")

    tmp = Path(tempfile.mkdtemp(prefix="cnvb-", dir="/tmp"))
    home = tmp / "h"
    server = ServerHandle(data_dir=tmp / "srv", database_url=None, extra_env={"CONVEYOR_ANONYMOUS_READ": "1"}).start()
    registry = f"127.0.0.1:{server.port}"
    results: dict[str, str] = {}
    try:
        ref = "localhost/conveyor-bench-hello:1"
        build_hello_image(tmp / "img", ref)
        image = f"{registry}/bench/hello:1"
        push_image(ref, image, f"admin:{server.admin_token}")

        marks: dict[str, float] = {}
        t0 = time.monotonic()

        def progress(line: str) -> None:
            if line.startswith("API server healthy"):
                marks["api"] = time.monotonic() - t0
            print(line, file=sys.stderr)

        spec = local.create(home, "bench", registries=[registry], progress=progress)
        marks["node"] = time.monotonic() - t0
        cluster = ClusterHandle(home, spec)

        t1 = time.monotonic()
        cluster.apply(deployment("hello", image, replicas=3))
        cluster.wait_for("Deployment Available", lambda: deployment_available(cluster, "default", "hello"), 300)
        marks["deploy"] = time.monotonic() - t1

        cluster.kubectl("delete", "deployment", "hello")
        time.sleep(args.settle)
        idle = rss_bytes(cluster_pids(home, cluster))

        results = {
            "create -> API healthy": f"{marks['api']:.1f} s",
            "create -> node Ready": f"{marks['node']:.1f} s   (target < 30 s)",
            "3-replica Deployment -> Available": f"{marks['deploy']:.1f} s   (target < 20 s)",
            "idle cluster resident memory": f"{idle / 2**20:.0f} MiB (target < 1536 MiB)",
        }
    finally:
        if (home / "clusters" / "bench").exists():
            local.delete(home, "bench", force=True)
        server.stop()
        subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", "-f", "localhost/conveyor-bench-hello:1"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    for k, v in results.items():
        print(f"{k:38s} {v}")


if __name__ == "__main__":
    main()

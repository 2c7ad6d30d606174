"""Local cluster benchmark (binaries cached): create -> API healthy -> node Ready -> cluster DNS
Ready (CoreDNS Available, which `create` waits for), then create -> networking and DNS Ready as a
user sees it: a Deployment and its Service applied when `create` returns, and a pod that resolves
the Service's name and gets an answer through it. Then a 3-replica Deployment of a ~2 MB image
pulled from Conveyor's registry (through the node's forwarder) -> Available, and the resident memory
of the idle cluster (all its processes, containers and the forwarder included) after it settles.

The forwarder every byte between the node and host loopback goes through (core/netns.py) is
measured against its anchor, a direct loopback connection on the same machine in the same run:
bulk throughput and request/response round trips.

Targets: node Ready < 30 s, networking and DNS Ready < 30 s, Deployment Available < 20 s, idle
memory < 1.5 GB per cluster, forwarder >= 0.3x direct loopback throughput.

Run: python benchmarks/cluster_startup.py [--settle 30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.clusters import (  # noqa: E402
    ClusterHandle,
    build_hello_image,
    deployment,
    deployment_available,
    push_image,
    service,
)
from tests.support.server import ServerHandle  # noqa: E402

from conveyor.clusters import local, node  # noqa: E402
from conveyor.clusters.binaries import ensure_binaries  # noqa: E402
from conveyor.clusters.layout import Layout  # noqa: E402
from conveyor.clusters.processes import pids_with_arg  # noqa: E402
from conveyor.core import containers, netns  # noqa: E402


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


def probe_pod(image: str) -> dict[str, object]:
    """Exits 0 once it resolved the Service `hello` by its DNS name and got its page through it."""
    loop = ("until /bin/busybox wget -q -O /dev/null http://hello.default.svc.cluster.local:8080/; "
            "do /bin/busybox sleep 0.2; done")
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": "default"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "probe", "image": image, "command": ["/bin/busybox", "sh", "-c", loop]}]},
    }


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a client may close with replies unread
            while chunk := conn.recv(65536):
                if len(chunk) < 64:  # a ping: answer it
                    conn.sendall(chunk)

    def run() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    return srv, int(srv.getsockname()[1])


def _transfer(connect: Callable[[], socket.socket], total: int) -> float:
    block = b"x" * 65536
    with connect() as s:
        t = time.perf_counter()
        for _ in range(total // len(block)):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
        return time.perf_counter() - t


def _round_trips(connect: Callable[[], socket.socket], n: int) -> float:
    with connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = time.perf_counter()
        for _ in range(n):
            s.sendall(b"ping")
            s.recv(16)
        return time.perf_counter() - t


def forwarder_vs_loopback() -> dict[str, str]:
    """The forwarder against a direct loopback connection (the anchor), same machine, same run."""
    name = f"cnvbench{os.getpid()}"
    netns.create(name)
    srv, port = _echo_server()
    try:
        with netns.Forwarder(name, [netns.Forward(("127.0.0.1", port), ("127.0.0.1", port))]):
            total = 512 * 2**20
            direct = min(_transfer(lambda: socket.create_connection(("127.0.0.1", port)), total) for _ in range(3))
            fwd = min(_transfer(lambda: netns.connect(name, ("127.0.0.1", port), timeout=60), total) for _ in range(3))
            rt_direct = _round_trips(lambda: socket.create_connection(("127.0.0.1", port)), 2000)
            rt_fwd = _round_trips(lambda: netns.connect(name, ("127.0.0.1", port), timeout=60), 2000)
    finally:
        srv.close()
        netns.delete(name)
    fwd_rate, direct_rate = total / fwd / 2**20, total / direct / 2**20
    return {
        "forwarder throughput": f"{fwd_rate:.0f} MiB/s vs direct loopback {direct_rate:.0f} MiB/s "
                                f"= {fwd_rate / direct_rate:.2f}x (target >= 0.3x)",
        "forwarder round trip": f"{rt_fwd / 2000 * 1e6:.0f} us vs direct {rt_direct / 2000 * 1e6:.0f} us "
                                f"({rt_fwd / rt_direct:.1f}x)",
    }


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
        images = []
        for n in (1, 2):  # the second, for the 3-replica Deployment, has layers the node has not pulled
            ref = f"localhost/conveyor-bench-hello:{n}"
            build_hello_image(tmp / f"img{n}", ref, text=f"hello {n}")
            images.append(f"{registry}/bench/hello:{n}")
            push_image(ref, images[-1], f"admin:{server.admin_token}")
        image = images[0]

        marks: dict[str, float] = {}
        t0 = time.monotonic()

        def progress(line: str) -> None:
            for prefix, mark in (("API server healthy", "api"), ("node ", "node"), ("cluster DNS Ready", "dns")):
                if line.startswith(prefix) and (mark != "node" or "Ready" in line):
                    marks[mark] = time.monotonic() - t0
            print(line, file=sys.stderr)

        spec = local.create(home, "bench", registries=[registry], progress=progress)
        cluster = ClusterHandle(home, spec)
        cluster.apply(deployment("hello", image), service("hello", port=8080), probe_pod(image))
        cluster.wait_for("the probe pod reached Service hello by name", lambda: cluster.get(
            "/api/v1/namespaces/default/pods/probe").get("status", {}).get("phase") == "Succeeded", 120)
        marks["net"] = time.monotonic() - t0
        cluster.kubectl("delete", "deployment", "hello")
        cluster.kubectl("delete", "pod", "probe")

        t1 = time.monotonic()
        cluster.apply(deployment("hello", images[1], replicas=3))
        cluster.wait_for("Deployment Available", lambda: deployment_available(cluster, "default", "hello"), 300)
        marks["deploy"] = time.monotonic() - t1

        cluster.kubectl("delete", "deployment", "hello")
        time.sleep(args.settle)
        idle = rss_bytes(cluster_pids(home, cluster))

        results = {
            "create -> API healthy": f"{marks['api']:.1f} s",
            "create -> node Ready": f"{marks['node']:.1f} s   (target < 30 s)",
            "create -> cluster DNS Ready": f"{marks['dns']:.1f} s",
            "create -> a pod reached a Service by name": f"{marks['net']:.1f} s   (target < 30 s)",
            "3-replica Deployment -> Available": f"{marks['deploy']:.1f} s   (target < 20 s)",
            "idle cluster resident memory": f"{idle / 2**20:.0f} MiB (target < 1536 MiB)",
        }
    finally:
        if (home / "clusters" / "bench").exists():
            local.delete(home, "bench", force=True)
        server.stop()
        for n in (1, 2):
            subprocess.run(containers.buildah("rmi", "-f", f"localhost/conveyor-bench-hello:{n}"), capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    results.update(forwarder_vs_loopback())
    for k, v in results.items():
        print(f"{k:42s} {v}")


if __name__ == "__main__":
    main()

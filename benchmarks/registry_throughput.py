"""Registry throughput: Conveyor against CNCF Distribution (Debian's docker-registry), same run.

(a) one 200 MB layer pushed (single streamed PUT) and pulled, with curl as the client so the
    client is not the bottleneck; (b) 500 small manifests pushed by tag and pulled by tag, by
    4 concurrent Python clients; (c) Conveyor's peak resident memory while a 1 GB blob streams
    in and out.

Targets (issue 13): every ratio >= 1.0x Distribution, manifest push included; memory < 150 MB.

Run: python benchmarks/registry_throughput.py [--blob-mb 200] [--manifests 500] [--big-mb 1024] [--reps 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.distribution import Distribution  # noqa: E402
from tests.support.server import ServerHandle  # noqa: E402

MB = 1024 * 1024


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    curl_auth: list[str]


def conveyor_target(server: ServerHandle) -> Target:
    token = httpx.get(f"{server.url}/v2/token", auth=("admin", server.admin_token)).json()["token"]
    return Target("conveyor", server.url, {"Authorization": f"Bearer {token}"},
                  ["-H", f"Authorization: Bearer {token}"])


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MB)
            f.write(os.urandom(n))
            left -= n


def refresh(path: Path) -> str:
    """Give the file new content (so each push is a new blob) and return its digest."""
    with open(path, "r+b") as f:
        f.write(os.urandom(32))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MB):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def curl_time(args: list[str]) -> float:
    out = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total}", *args],
                         capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout.strip())


def push_blob(t: Target, repo: str, path: Path, digest: str) -> float:
    with httpx.Client(headers=t.headers, timeout=60) as c:
        r = c.post(f"{t.url}/v2/{repo}/blobs/uploads/")
        r.raise_for_status()
        loc = httpx.URL(t.url).join(r.headers["location"]).copy_merge_params({"digest": digest})
    return curl_time([*t.curl_auth, "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                      "-T", str(path), str(loc)])


def pull_blob(t: Target, repo: str, digest: str) -> float:
    return curl_time([*t.curl_auth, f"{t.url}/v2/{repo}/blobs/{digest}"])


def manifest_bench(t: Target, count: int, workers: int = 4, repo: str = "bench/manifests") -> tuple[float, float]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    layer = os.urandom(1024)
    blobs = [config.encode(), layer]
    local = threading.local()

    def client() -> httpx.Client:
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = httpx.Client(base_url=t.url, headers=t.headers, timeout=60)
        return c

    c0 = client()
    for b in blobs:
        r = c0.post(f"/v2/{repo}/blobs/uploads/")
        loc = httpx.URL(t.url).join(r.headers["location"]).copy_merge_params(
            {"digest": "sha256:" + hashlib.sha256(b).hexdigest()})
        c0.put(loc, content=b).raise_for_status()
    manifests = []
    for i in range(count):
        manifests.append(json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + hashlib.sha256(blobs[0]).hexdigest(), "size": len(blobs[0])},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:" + hashlib.sha256(layer).hexdigest(), "size": len(layer)}],
            "annotations": {"n": str(i)},
        }).encode())

    def put(i: int) -> None:
        r = client().put(f"/v2/{repo}/manifests/t{i}", content=manifests[i],
                         headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 201, r.text

    def get(i: int) -> None:
        r = client().get(f"/v2/{repo}/manifests/t{i}",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200 and r.content == manifests[i]

    def timed(fn: Callable[[int], None]) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fn, range(count)))
        return count / (time.perf_counter() - start)

    return timed(put), timed(get)


def rss(pid: int) -> int:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) * 1024 if m else 0


def peak_rss_during(pid: int, fn: Callable[[], object]) -> int:
    peak = rss(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss(pid))
            time.sleep(0.02)

    s = threading.Thread(target=sample)
    s.start()
    try:
        fn()
    finally:
        done.set()
        s.join()
    return peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blob-mb", type=int, default=200)
    ap.add_argument("--manifests", type=int, default=500)
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    server = ServerHandle(data_dir=work / "conveyor", database_url=None).start()
    dist = Distribution(work / "distribution").start()
    try:
        conv = conveyor_target(server)
        base = Target("distribution", dist.url, {}, [])
        blob = work / "blob.bin"
        size = args.blob_mb * MB
        write_random(blob, size)
        # The two registries take turns, in alternating order, rep by rep: on a shared machine the
        # load changes within a run, and a side measured only at the start or only at the end
        # would be judged by the load rather than by its code.
        samples: dict[str, dict[str, list[float]]] = {t.name: {} for t in (base, conv)}
        for rep in range(args.reps):
            for t in (base, conv) if rep % 2 == 0 else (conv, base):
                digest = refresh(blob)
                got = samples[t.name]
                got.setdefault("push", []).append(size / push_blob(t, f"bench/blob{rep}", blob, digest) / MB)
                got.setdefault("pull", []).append(size / pull_blob(t, f"bench/blob{rep}", digest) / MB)
                mput, mget = manifest_bench(t, args.manifests, repo=f"bench/manifests{rep}")
                got.setdefault("mput", []).append(mput)
                got.setdefault("mget", []).append(mget)
        results = {name: {k: statistics.median(v) for k, v in got.items()} for name, got in samples.items()}
        for name, r in results.items():
            print(f"{name:13s} blob push {r['push']:7.0f} MB/s  pull {r['pull']:7.0f} MB/s   "
                  f"manifest push {r['mput']:6.0f}/s  pull {r['mget']:6.0f}/s  (medians of {args.reps})", flush=True)
        c, d = results["conveyor"], results["distribution"]
        print("ratios (conveyor / distribution, target >= 1.0):")
        for key, label in (("push", "blob push"), ("pull", "blob pull"), ("mput", "manifest push"),
                           ("mget", "manifest pull")):
            print(f"  {label:14s} {c[key] / d[key]:5.2f}x")

        big = work / "big.bin"
        write_random(big, args.big_mb * MB)
        blob.unlink()
        digest = refresh(big)
        assert server.proc is not None
        pid = server.proc.pid
        idle = rss(pid)
        push_peak = peak_rss_during(pid, lambda: push_blob(conv, "bench/big", big, digest))
        pull_peak = peak_rss_during(pid, lambda: pull_blob(conv, "bench/big", digest))
        print(f"conveyor memory: idle {idle / MB:.0f} MB, peak during {args.big_mb} MB push {push_peak / MB:.0f} MB, "
              f"during pull {pull_peak / MB:.0f} MB (target < 150 MB)")
    finally:
        server.stop()
        dist.cleanup()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()

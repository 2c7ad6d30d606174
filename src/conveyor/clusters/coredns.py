"""CoreDNS, the cluster DNS of every local cluster: built once from its Go module, packed as an image.

No Debian package ships CoreDNS and public image registries are out of reach, so it is built the
way binaries.py builds Kubernetes: a throwaway module in ``~/.cache/conveyor/coredns/<version>/src``
requires ``github.com/coredns/coredns`` at the pinned release, and a ``main`` calls ``coremain.Run``
exactly as CoreDNS's own ``coredns.go`` does. That ``main`` imports only the plugins the cluster's
Corefile uses (dnsserver's directive table orders them as upstream does; a plugin that is not
imported is simply unavailable). The full plugin set drags in the AWS, Azure and Google SDKs and
takes several times longer to compile on these 2-core machines for nothing a local cluster uses.

The binary is static (``CGO_ENABLED=0``), built ``nice -n 19`` under a file lock, and packed into
a one-layer image (images.py) that each node imports like its sandbox image.

Why v1.14.7: the newest 1.14 patch release the Go module proxy serves; its client-go (v0.35) is one
minor ahead of the pinned Kubernetes 1.34, inside client-go's supported skew, and it builds with the
machine's Go 1.26 (it needs Go >= 1.25).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from conveyor.clusters.binaries import BinariesMissing, Progress, build_lock, cache_base, go_binary, run_logged

COREDNS_VERSION = "v1.14.7"
COREDNS_IMAGE = f"conveyor.local/coredns:{COREDNS_VERSION.lstrip('v')}"

# the plugins the Corefile in addons.py uses, and nothing else
PLUGINS = ("errors", "health", "ready", "kubernetes", "hosts", "metrics", "cache", "reload", "loadbalance", "log")

_MAIN_GO = """// coredns for Conveyor's local clusters: upstream's main with only the plugins the Corefile uses.
package main

import (
\t_ "github.com/coredns/coredns/core/dnsserver"
{imports}
\t"github.com/coredns/coredns/coremain"
)

func main() {{
\tcoremain.Run()
}}
"""


def _quiet(_: str) -> None:
    pass


def build_dir(version: str = COREDNS_VERSION) -> Path:
    return cache_base() / "coredns" / version


def binary_path(version: str = COREDNS_VERSION) -> Path:
    return build_dir(version) / "bin" / "coredns"


def _write_module(src: Path, version: str) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        f"module conveyor.local/corednsbuild\n\ngo 1.25.0\n\nrequire github.com/coredns/coredns {version}\n"
    )
    imports = "\n".join(f'\t_ "github.com/coredns/coredns/plugin/{p}"' for p in PLUGINS)
    (src / "main.go").write_text(_MAIN_GO.format(imports=imports))


def ensure_coredns(version: str = COREDNS_VERSION, progress: Progress = _quiet) -> Path:
    """The CoreDNS binary, built (once, under a lock) if it is not in the cache yet."""
    path = binary_path(version)
    if path.is_file() and os.access(path, os.X_OK):
        return path
    go = go_binary()
    if go is None:
        raise BinariesMissing(
            f"CoreDNS {version} is not built and Go is not installed to build it into {build_dir(version)}",
            rule="coredns-binary",
        )
    with build_lock(build_dir(version)):
        if not path.is_file():
            build(version, go, progress)
    return path


def build(version: str, go: str, progress: Progress = _quiet) -> None:
    root = build_dir(version)
    src, log = root / "src", root / "build.log"
    _write_module(src, version)
    env = dict(os.environ)
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -trimpath -mod=mod").strip()
    env.setdefault("GOTOOLCHAIN", "local")
    env["CGO_ENABLED"] = "0"  # runs alone in an image without libc
    started = time.monotonic()
    progress(f"resolving CoreDNS {version} (go mod tidy in {src})")
    run_logged([go, "mod", "tidy"], src, env, log)
    progress(f"building CoreDNS {version}")
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    tmp = root / "bin" / ".coredns.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    ldflags = f"-s -w -X github.com/coredns/coredns/coremain.GitCommit={version}"
    run_logged([*nice, go, "build", "-ldflags", ldflags, "-o", str(tmp), "."], src, env, log)
    check = subprocess.run([str(tmp), "-plugins"], capture_output=True, text=True, timeout=30)
    registered = {line.strip().removeprefix("dns.") for line in check.stdout.splitlines()}
    missing = [p for p in PLUGINS if {"metrics": "prometheus"}.get(p, p) not in registered]
    if check.returncode != 0 or missing:
        raise BinariesMissing(
            f"the CoreDNS build lacks plugins {missing}: {check.stdout[-500:]}", rule="coredns-binary"
        )
    tmp.rename(binary_path(version))
    progress(f"built CoreDNS {version} in {time.monotonic() - started:.0f}s")


def main() -> None:  # python -m conveyor.clusters.coredns: build ahead of time
    import sys

    print(ensure_coredns(progress=lambda line: print(line, file=sys.stderr, flush=True)))


if __name__ == "__main__":
    main()

"""The Kubernetes and etcd binaries a local cluster runs: found on disk, or built once with Go.

Lookup order for each binary, first hit wins:

1. ``CONVEYOR_KUBE_BIN_DIR`` (a directory holding prebuilt binaries),
2. ``KUBEBUILDER_ASSETS`` (envtest's layout: etcd, kube-apiserver, kubectl; the rest is built),
3. the build cache ``~/.cache/conveyor/kubernetes/<version>/bin`` (``CONVEYOR_CACHE_DIR`` moves it).

Whatever is still missing is built from the Go module proxy with the machine's Go: a throwaway
module in the cache directory requires ``k8s.io/kubernetes`` at the pinned release and pins every
staging module (``k8s.io/api`` ...) to the matching ``v0.X.Y`` with ``replace``, exactly as the
Kubernetes ``go.mod`` lists them. etcd is built from ``go.etcd.io/etcd/server/v3`` at the version
that Kubernetes itself requires, through a three-line ``main`` calling ``etcdmain.Main``.

The build runs ``nice -n 19`` with ``-trimpath`` and reports progress (packages compiled) through
a callback; a file lock keeps two processes from building the same version at once.

Why v1.34: the machines run a hybrid cgroup layout (v1 controllers) and Debian's containerd
1.6.20. Kubelet 1.35 turns ``failCgroupV1`` on by default and the Kubernetes releases after it
drop containerd 1.x; 1.34 is the newest release that runs on cgroup v1 (with
``failCgroupV1: false``) and talks CRI v1 to containerd 1.6.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conveyor.core import cache_dir
from conveyor.core.errors import ConveyorError
from conveyor.core.locks import file_lock

KUBERNETES_VERSION = "v1.34.4"
KUBE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
ETCD = "etcd"
PAUSE = "pause"  # the pod sandbox's process, packed into the sandbox image (see images.py)
ALL_BINARIES = (*KUBE_COMPONENTS, ETCD, PAUSE)

_PAUSE_GO = """// pause: the pod sandbox process. Sleeps as PID 1, reaps children, exits on INT/TERM.
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsigs := make(chan os.Signal, 8)
\tsignal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor s := range sigs {
\t\tif s != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tvar ws syscall.WaitStatus
\t\t\tpid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
\t\t\tif pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""

Progress = Callable[[str], None]


class BinariesMissing(ConveyorError):
    status = 503
    title = "Kubernetes binaries unavailable"


def _quiet(_: str) -> None:
    pass


def cache_base() -> Path:
    """``~/.cache/conveyor`` (``CONVEYOR_CACHE_DIR`` moves it): every built component lives below it."""
    return cache_dir()


def cache_root() -> Path:
    return cache_base() / "kubernetes"


def build_dir(version: str = KUBERNETES_VERSION) -> Path:
    return cache_root() / version


def _search_dirs(version: str) -> list[Path]:
    env_dirs = (os.environ.get(v) for v in ("CONVEYOR_KUBE_BIN_DIR", "KUBEBUILDER_ASSETS"))
    dirs = [Path(d).expanduser() for d in env_dirs if d]
    dirs.append(build_dir(version) / "bin")
    return dirs


@dataclass(frozen=True)
class KubeBinaries:
    version: str
    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def locate(version: str = KUBERNETES_VERSION) -> tuple[dict[str, Path], list[str]]:
    """The binaries found on disk, and the names of those that are not."""
    found: dict[str, Path] = {}
    for name in ALL_BINARIES:
        for d in _search_dirs(version):
            p = d / name
            if p.is_file() and os.access(p, os.X_OK):
                found[name] = p
                break
    return found, [n for n in ALL_BINARIES if n not in found]


def go_binary() -> str | None:
    """The Go toolchain: ``CONVEYOR_GO`` if set, else ``go`` on PATH or in /usr/local/go."""
    if "CONVEYOR_GO" in os.environ:
        chosen = os.environ["CONVEYOR_GO"]
        return chosen if chosen and os.access(chosen, os.X_OK) else None
    return shutil.which("go") or (
        "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
    )


def ensure_binaries(version: str = KUBERNETES_VERSION, progress: Progress = _quiet) -> KubeBinaries:
    """Every binary a cluster needs, building the missing ones (once) if Go is available."""
    found, missing = locate(version)
    if not missing:
        return KubeBinaries(version, found)
    go = go_binary()
    if go is None:
        raise BinariesMissing(
            f"missing {', '.join(missing)} for Kubernetes {version}: put them in CONVEYOR_KUBE_BIN_DIR "
            f"(or KUBEBUILDER_ASSETS), or install Go so Conveyor can build them into {build_dir(version)}",
            rule="kube-binaries",
            missing=missing,
        )
    with build_lock(build_dir(version)):
        found, missing = locate(version)  # another process may have built them while we waited
        if missing:
            build(missing, version, progress=progress, go=go)
            found, missing = locate(version)
    if missing:
        raise BinariesMissing(f"build finished but {', '.join(missing)} not found", rule="kube-binaries")
    return KubeBinaries(version, found)


@contextmanager
def build_lock(d: Path) -> Iterator[None]:
    """An exclusive file lock on a build directory: a second builder waits, then finds the result."""
    with file_lock(d / ".build.lock"):
        yield


_REPLACE_RE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.M)
_GO_RE = re.compile(r"^go\s+(\S+)", re.M)
_ETCD_RE = re.compile(r"^\s*go\.etcd\.io/etcd/server/v3\s+(v\S+)", re.M)


def staging_version(version: str) -> str:
    """k8s.io/kubernetes v1.34.4 -> the staging modules' v0.34.4."""
    major, minor, patch = version.lstrip("v").split(".", 2)
    return f"v0.{minor}.{patch}"


def run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise BinariesMissing(f"{' '.join(cmd[:4])} failed (exit {rc}); see {log}:\n" + "\n".join(tail))


def write_build_module(version: str, go: str, env: dict[str, str], log: Path) -> tuple[Path, str]:
    """The throwaway Go module that builds the pinned release; returns its dir and etcd's version."""
    d = build_dir(version) / "src"
    d.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        cwd=d, env=env, capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise BinariesMissing(f"cannot download k8s.io/kubernetes@{version}: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    import json

    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text()
    staging = sorted(set(_REPLACE_RE.findall(gomod)))
    go_match = _GO_RE.search(gomod)
    go_directive = go_match.group(1) if go_match else "1.24.0"
    etcd_match = _ETCD_RE.search(gomod)
    etcd_version = etcd_match.group(1) if etcd_match else "v3.6.4"
    sv = staging_version(version)
    lines = [
        "module conveyor.local/kubebuild",
        "",
        f"go {go_directive}",
        "",
        "godebug default=go1.24",
        "",
        "require (",
        f"\tk8s.io/kubernetes {version}",
        f"\tgo.etcd.io/etcd/server/v3 {etcd_version}",
        ")",
        "",
        "replace (",
        *(f"\t{m} => {m} {sv}" for m in staging),
        ")",
        "",
    ]
    (d / "go.mod").write_text("\n".join(lines))
    (d / "etcd").mkdir(exist_ok=True)
    (d / "etcd" / "main.go").write_text(
        "// etcd server, as the upstream etcd binary's main.\n"
        "package main\n\n"
        'import (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    (d / "pause").mkdir(exist_ok=True)
    (d / "pause" / "main.go").write_text(_PAUSE_GO)
    return d, etcd_version


def _ldflags(version: str) -> str:
    major, minor, _ = version.lstrip("v").split(".", 2)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={stamp}",
        ]
    return " ".join(flags)


def build(
    names: list[str], version: str = KUBERNETES_VERSION, *, progress: Progress = _quiet, go: str | None = None
) -> None:
    """Build the named binaries into the cache; progress gets one line per step and per 50 packages."""
    go = go or go_binary()
    if go is None:
        raise BinariesMissing("Go is not installed", rule="kube-binaries")
    root = build_dir(version)
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    log = root / "build.log"
    env = dict(os.environ)
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -trimpath -mod=mod").strip()
    env.setdefault("GOTOOLCHAIN", "local")
    started = time.monotonic()
    progress(f"preparing the Go module for Kubernetes {version} in {root}")
    src, etcd_version = write_build_module(version, go, env, log)
    progress("resolving modules (go mod download)")
    run_logged([go, "mod", "download"], src, env, log)
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    for name in names:
        pkg = {ETCD: "./etcd", PAUSE: "./pause"}.get(name, f"k8s.io/kubernetes/cmd/{name}")
        label = {ETCD: f"etcd {etcd_version}", PAUSE: "pause (static)"}.get(name, f"{name} {version}")
        progress(f"building {label}")
        cmd = [*nice, go, "build", "-v", "-ldflags", _ldflags(version), "-o", str(bindir / f".{name}.tmp"), pkg]
        # the pause binary runs alone in an image without libc
        build_env = {**env, "CGO_ENABLED": "0"} if name == PAUSE else env
        t0 = time.monotonic()
        with open(log, "a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=src, env=build_env, stdout=fh, stderr=subprocess.PIPE, text=True)
            assert proc.stderr is not None
            for count, line in enumerate(proc.stderr, start=1):
                fh.write(line)
                if count % 50 == 0:
                    progress(f"  {name}: {count} packages compiled")
            rc = proc.wait()
        if rc != 0:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            raise BinariesMissing(f"building {name} failed (exit {rc}); see {log}:\n" + "\n".join(tail))
        (bindir / f".{name}.tmp").rename(bindir / name)
        progress(f"built {name} in {time.monotonic() - started:.0f}s total so far ({time.monotonic() - t0:.0f}s)")
    progress(f"done in {time.monotonic() - started:.0f}s; binaries in {bindir}")


def disk_usage(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def main() -> None:  # python -m conveyor.clusters.binaries: build ahead of time
    import sys

    t0 = time.monotonic()
    bins = ensure_binaries(progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"Kubernetes {bins.version} ready in {time.monotonic() - t0:.0f}s:")
    for name, path in bins.paths.items():
        print(f"  {name}: {path}")


if __name__ == "__main__":
    main()

"""Flux's source-controller and kustomize-controller, built once from the Go module proxy.

Flux publishes no Debian or PyPI package, so the controllers are built the way
``clusters/binaries.py`` builds Kubernetes: pinned, from their Go modules, into
``~/.cache/conveyor/flux/<version>`` (``CONVEYOR_CACHE_DIR`` moves it), never into the checkout.

Why v1.9.6, and the two edits (measured on this machine, Go 1.26):

- Newer releases (v1.10) need Go 1.27 and modules the proxy refuses to serve.
- Each controller's ``go.mod`` says ``replace github.com/fluxcd/<name>/api => ./api``, but a module
  zip never holds a nested module, so ``./api`` is missing: the replace is dropped and the
  published ``api`` module of the same version is used (it is the same code, tagged with it).
- source-controller requires ``github.com/fluxcd/pkg/artifact v0.18.3``, which the proxy does not
  serve; v0.18.0 (same API) is pinned with a ``replace``.

The module source is copied from Go's module cache into the cache dir, its ``go.mod`` is edited
there with ``go mod edit``, and ``go build`` runs ``nice -n 19``. On 2 cores the builds took 261 s
(source-controller) and 157 s (kustomize-controller) with a warm module cache. A file lock keeps
two processes (two test sessions, the demo) from building at once; the binaries appear by rename,
so a reader never sees half of one. The CRDs come from the same module source (``config/crd``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conveyor.clusters.binaries import build_lock, go_binary
from conveyor.core import cache_dir
from conveyor.core.errors import ConveyorError

FLUX_VERSION = "v1.9.6"
SOURCE_CONTROLLER = "source-controller"
KUSTOMIZE_CONTROLLER = "kustomize-controller"
# controller -> module pins that make it build from the proxy (see the module docstring)
PINS: dict[str, dict[str, str]] = {
    SOURCE_CONTROLLER: {"github.com/fluxcd/pkg/artifact": "v0.18.0"},
    KUSTOMIZE_CONTROLLER: {},
}
CONTROLLERS = tuple(PINS)

Progress = Callable[[str], None]


class FluxUnavailable(ConveyorError):
    status = 503
    title = "Flux controllers unavailable"


def _quiet(_: str) -> None:
    pass


def build_dir(version: str = FLUX_VERSION) -> Path:
    return cache_dir() / "flux" / version


@dataclass(frozen=True)
class FluxControllers:
    version: str
    binaries: dict[str, Path]
    crds: list[Path]

    def __getitem__(self, name: str) -> Path:
        return self.binaries[name]


def _located(version: str) -> FluxControllers | None:
    root = build_dir(version)
    bins = {name: root / "bin" / name for name in CONTROLLERS}
    if not all(p.is_file() and os.access(p, os.X_OK) for p in bins.values()):
        return None
    crds = sorted((root / "crds").glob("*.yaml"))
    return FluxControllers(version, bins, crds) if crds else None


def ensure_controllers(version: str = FLUX_VERSION, progress: Progress = _quiet) -> FluxControllers:
    """The controllers and their CRDs, building whatever is missing (once, under a file lock)."""
    found = _located(version)
    if found is not None:
        return found
    go = go_binary()
    if go is None:
        raise FluxUnavailable(f"Flux {version} is not built and Go is not installed to build it into "
                              f"{build_dir(version)}", rule="flux.binaries")
    with build_lock(build_dir(version)):
        found = _located(version)  # another process may have built them while we waited
        if found is None:
            build(version, go=go, progress=progress)
            found = _located(version)
    if found is None:
        raise FluxUnavailable(f"the Flux build finished but left no binaries in {build_dir(version)}",
                              rule="flux.binaries")
    return found


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> str:
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    with open(log, "a") as fh:
        fh.write(p.stdout[-20000:] + p.stderr[-20000:])
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-20:])
        raise FluxUnavailable(f"{' '.join(cmd[:4])} failed (exit {p.returncode}); see {log}:\n{tail}",
                              rule="flux.build")
    return p.stdout


def _writable_copy(src: Path, dest: Path) -> None:
    """Module cache files are read-only; the copy must be editable (go.mod, go.sum)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, symlinks=True)
    for p in [dest, *dest.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def module_dir(name: str, version: str, go: str, env: dict[str, str], log: Path) -> Path:
    """The controller's module, downloaded into Go's module cache (read-only there)."""
    out = _run([go, "mod", "download", "-json", f"github.com/fluxcd/{name}@{version}"], build_dir(version), env, log)
    return Path(json.loads(out)["Dir"])


def prepare_source(name: str, version: str, module: Path, go: str, env: dict[str, str], log: Path) -> Path:
    """The controller's module source in the cache dir, with its go.mod edited to build from the proxy."""
    src = build_dir(version) / "src" / name
    _writable_copy(module, src)
    edits = [f"-dropreplace=github.com/fluxcd/{name}/api", f"-require=github.com/fluxcd/{name}/api@{version}"]
    edits += [f"-replace={mod}={mod}@{pinned}" for mod, pinned in PINS[name].items()]
    _run([go, "mod", "edit", *edits], src, env, log)
    return src


def build(version: str = FLUX_VERSION, *, go: str | None = None, progress: Progress = _quiet) -> None:
    go = go or go_binary()
    if go is None:
        raise FluxUnavailable("Go is not installed", rule="flux.binaries")
    root = build_dir(version)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    log = root / "build.log"
    env = dict(os.environ, CGO_ENABLED="0")
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=mod -trimpath").strip()
    env.setdefault("GOTOOLCHAIN", "local")
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    crds = root / "crds"
    crds.mkdir(exist_ok=True)
    for name in CONTROLLERS:
        started = time.monotonic()
        module = module_dir(name, version, go, env, log)
        for crd in sorted((module / "config" / "crd" / "bases").glob("*.yaml")):
            shutil.copyfile(crd, crds / crd.name)
        if (root / "bin" / name).is_file():
            continue
        progress(f"Flux {name} {version}: preparing its module in {root / 'src' / name}")
        src = prepare_source(name, version, module, go, env, log)
        progress(f"Flux {name} {version}: downloading modules and building (a few minutes on 2 cores)")
        _run([*nice, go, "build", "-ldflags", "-s -w", "-o", str(root / "bin" / f".{name}.tmp"), "."], src, env, log)
        (root / "bin" / f".{name}.tmp").rename(root / "bin" / name)
        progress(f"Flux {name} built in {time.monotonic() - started:.0f}s")


def main() -> None:  # python -m conveyor.clusters.flux.build: build ahead of time
    import sys

    t0 = time.monotonic()
    found = ensure_controllers(progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"Flux {found.version} ready in {time.monotonic() - t0:.0f}s:")
    for name, path in found.binaries.items():
        print(f"  {name}: {path}")


if __name__ == "__main__":
    main()

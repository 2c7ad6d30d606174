"""Images of Conveyor itself, for what runs inside clusters: the agent, and the runner's task container.

Built locally, as public registries are unreachable: the Debian root filesystem of ``debian.py`` (with
the variant's Debian packages), a virtual environment at ``/opt/conveyor`` made with the image's own
Python 3.11, Conveyor's wheel built from this checkout, and the variant's Python dependencies only:

- ``agent``: lightkube, PyYAML, httpx, pydantic, cryptography — what ``conveyor.agent`` imports and no
  more (no FastAPI, SQLAlchemy or Alembic: ``conveyor-agent`` runs with exactly these);
- ``runner``: Conveyor with every dependency (the built-in tasks: Helm, hadolint, kubectl,
  kubernetes-validate) plus git, buildah and skopeo from Debian, for the Kubernetes executor.

The archive is cached in ``~/.cache/conveyor/images`` under a key of the variant, the packages and
the hash of Conveyor's sources, so an unchanged checkout reuses it. Installing the Python packages
inside the image reaches the package index through the host's network (``buildah run --network host``):
this is Conveyor's own, trusted build, never a pipeline's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conveyor.core.containers import buildah
from conveyor.images.debian import BaseImageError, _run, cache_dir, rootfs_tarball

VENV = "/opt/conveyor"


@dataclass(frozen=True)
class Variant:
    name: str
    debian_packages: tuple[str, ...]
    python: tuple[str, ...]  # pip requirements besides Conveyor's wheel (installed --no-deps)
    full_dependencies: bool  # install the wheel with its own dependencies
    entrypoint: tuple[str, ...]


VARIANTS = {
    "agent": Variant("agent", ("python3", "python3-venv", "git", "ca-certificates"),
                     ("lightkube>=0.15", "pyyaml>=6", "httpx>=0.27", "pydantic>=2.6", "cryptography>=42",
                      "typer>=0.12"),
                     False, (f"{VENV}/bin/conveyor-agent",)),
    "runner": Variant("runner", ("python3", "python3-venv", "git", "ca-certificates", "buildah", "skopeo",
                                 "fuse-overlayfs", "uidmap"), (), True, (f"{VENV}/bin/conveyor",)),
}


def source_root() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").exists():
        raise BaseImageError("Conveyor's images are built from its source checkout (pyproject.toml not found "
                             f"above {Path(__file__).parent})")
    return root


def source_hash(root: Path) -> str:
    h = hashlib.sha256((root / "pyproject.toml").read_bytes())
    for path in sorted((root / "src" / "conveyor").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _wheel(root: Path, out: Path, log: Callable[[str], None]) -> Path:
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
          str(root)], log)
    wheels = sorted(out.glob("conveyor-*.whl"))
    if not wheels:
        raise BaseImageError("pip wheel made no Conveyor wheel")
    return wheels[-1]


def conveyor_image(variant: str, log: Callable[[str], None] = print) -> Path:
    """The OCI archive of Conveyor's ``variant`` image (built on first use for these sources)."""
    if variant not in VARIANTS:
        raise BaseImageError(f"unknown image variant {variant!r}; there are {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    root = source_root()
    key = hashlib.sha256(f"{v}|{source_hash(root)}".encode()).hexdigest()[:16]
    archive = cache_dir().parent / "images" / f"conveyor-{v.name}-{key}.oci.tar"
    if archive.exists():
        log(f"using cached image {archive}")
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    rootfs = rootfs_tarball(packages=v.debian_packages, log=log)
    with tempfile.TemporaryDirectory(prefix="conveyor-image-") as tmp:
        wheel = _wheel(root, Path(tmp), log)
        ctr = _run(buildah("from", "--name", f"conveyor-{v.name}-{os.getpid()}", "scratch"), log).strip()
        try:
            _build(ctr, v, rootfs, wheel, log)
            partial = archive.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            _run(buildah("commit", "--rm", ctr, f"oci-archive:{partial}"), log)
            ctr = ""
            os.replace(partial, archive)
        finally:
            if ctr:
                subprocess.run(buildah("rm", ctr), capture_output=True)
    for old in archive.parent.glob(f"conveyor-{v.name}-*.oci.tar"):
        if old != archive:
            old.unlink(missing_ok=True)
    log(f"image conveyor-{v.name} cached at {archive}")
    return archive


def _build(ctr: str, v: Variant, rootfs: Path, wheel: Path, log: Callable[[str], None]) -> None:
    _run(buildah("add", ctr, str(rootfs), "/"), log)
    _run(buildah("copy", ctr, str(wheel), f"/tmp/{wheel.name}"), log)

    def inside(*argv: str) -> None:
        _run(buildah("run", "--network", "host", ctr, "--", *argv), log, timeout=3600)

    inside("python3", "-m", "venv", VENV)
    deps = [] if v.full_dependencies else ["--no-deps"]
    inside(f"{VENV}/bin/pip", "install", "-q", "--no-cache-dir", *deps, f"/tmp/{wheel.name}")
    if v.python:
        inside(f"{VENV}/bin/pip", "install", "-q", "--no-cache-dir", *v.python)
    inside("rm", "-f", f"/tmp/{wheel.name}")
    _run(buildah("config", "--env", f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--env", "LANG=C.UTF-8", "--env", "PYTHONUNBUFFERED=1", "--user", "0",
                 "--entrypoint", "[" + ", ".join(f'"{a}"' for a in v.entrypoint) + "]", "--cmd", "",
                 "--label", f"org.conveyor.image={v.name}", ctr), log)


def clean_cache() -> None:
    shutil.rmtree(cache_dir().parent / "images", ignore_errors=True)

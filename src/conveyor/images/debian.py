"""Base images made locally, for machines that cannot reach public registries.

A minimal Debian root filesystem with the requested packages is made with ``debootstrap`` once and
cached as a tarball outside any checkout (``~/.cache/conveyor/base-images``); ``buildah`` turns it
into a single-layer image, and ``skopeo`` copies that into the Conveyor registry under a cache
name (e.g. ``cache/debian-python:12``) that pipelines use as their ``BASE_IMAGE``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conveyor.core import cache_dir as conveyor_cache_dir
from conveyor.core import environment
from conveyor.core.containers import buildah, skopeo
from conveyor.core.locks import file_lock

DEFAULT_SUITE = "bookworm"
DEFAULT_PACKAGES = ("python3",)
DEFAULT_TAG = "cache/debian-python:12"


class BaseImageError(RuntimeError):
    pass


def cache_dir() -> Path:
    return conveyor_cache_dir() / "base-images"


def host_debian_mirror() -> str | None:
    """The Debian mirror this machine's apt already uses (no mirror name is baked into Conveyor)."""
    mirror = environment().debian_mirror
    if mirror:
        return mirror
    candidates: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for m in re.finditer(r"^URIs:\s*(\S+)", path.read_text(errors="replace"), re.M):
            candidates.append(m.group(1))
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", legacy.read_text(errors="replace"), re.M):
            candidates.append(m.group(1))
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    return candidates[0] if candidates else None


def _run(argv: list[str], log: Callable[[str], None], timeout: float = 1800, secret: str = "") -> str:
    log("$ " + " ".join(a.replace(secret, "***") if secret else a for a in argv))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-20:]
        raise BaseImageError(f"{argv[0]} failed ({p.returncode}):\n" + "\n".join(tail))
    return p.stdout


def rootfs_tarball(
    suite: str = DEFAULT_SUITE,
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    mirror: str | None = None,
    log: Callable[[str], None] = print,
    refresh: bool = False,
) -> Path:
    """The cached root filesystem tarball, made with debootstrap on first use (and again on ``refresh``:
    the mirror's current packages, security fixes included)."""
    out = _tarball_path(suite, packages)
    with file_lock(_lock_path(out)):
        return _cached_rootfs(out, suite, packages, mirror, log, refresh)


def _tarball_path(suite: str, packages: tuple[str, ...]) -> Path:
    key = hashlib.sha256(f"{suite}|{','.join(sorted(packages))}".encode()).hexdigest()[:12]
    return cache_dir() / f"debian-{suite}-{key}.tar"


def _lock_path(tarball: Path) -> Path:
    """One lock per root filesystem, held around check-then-make of it and of its image archive: a
    refresh deletes both, and another process (a parallel test worker, the demo) must neither read
    them half-made nor make them at the same time into the same ``.partial`` file."""
    return tarball.with_name(f".{tarball.stem}.lock")


def _cached_rootfs(out: Path, suite: str, packages: tuple[str, ...], mirror: str | None,
                   log: Callable[[str], None], refresh: bool) -> Path:
    if refresh:
        out.unlink(missing_ok=True)
        out.with_name(out.stem + ".oci.tar").unlink(missing_ok=True)
    if out.exists():
        log(f"using cached root filesystem {out}")
        return out
    if shutil.which("debootstrap") is None:
        raise BaseImageError("debootstrap is not installed (scripts/setup.sh installs it)")
    if os.geteuid() != 0:
        raise BaseImageError("debootstrap needs root to make a root filesystem")
    mirror = mirror or host_debian_mirror()
    if not mirror:
        raise BaseImageError("no Debian mirror configured; set CONVEYOR_DEBIAN_MIRROR")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        argv = ["debootstrap", "--variant=minbase"]
        if packages:
            argv.append("--include=" + ",".join(packages))
        _run([*argv, suite, str(root), mirror], log)
        # Package lists and caches only make the image bigger.
        for sub in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for child in (root / sub).glob("*"):
                if child.is_file():
                    child.unlink()
        partial = out.with_suffix(".partial")
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], log)
        os.replace(partial, out)
    log(f"root filesystem cached at {out}")
    return out


def build_and_import(
    registry_host: str,
    user: str,
    token: str,
    tag: str = DEFAULT_TAG,
    suite: str = DEFAULT_SUITE,
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    mirror: str | None = None,
    log: Callable[[str], None] = print,
    refresh: bool = False,
) -> str:
    """Make (or reuse) the root filesystem, build a one-layer image, copy it to the registry.

    With ``refresh`` the root filesystem is made again from the mirror's current packages and pushed
    under the same tag: a new digest, so the registry records ``registry.base.updated`` and every app
    built on the tag is rebuilt (``pipelines/rebuilds.py``). Returns the digest in the registry.
    """
    out = _tarball_path(suite, packages)
    with file_lock(_lock_path(out)):
        tarball = _cached_rootfs(out, suite, packages, mirror, log, refresh)
        archive = _cached_archive(tarball, suite, log)
        # Pushed under the lock too: a refresh elsewhere replaces the archive, never mid-copy.
        return push_archive(archive, registry_host, tag, user, token, log)


def _cached_archive(tarball: Path, suite: str, log: Callable[[str], None]) -> Path:
    archive = tarball.with_name(tarball.stem + ".oci.tar")
    if archive.exists():
        return archive
    with working_container("scratch", f"conveyor-base-{os.getpid()}", log) as ctr:
        _run(buildah("add", ctr, str(tarball), "/"), log)
        _run(buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "--env", "LANG=C.UTF-8", "--cmd", "/bin/sh", "--label",
                     f"org.conveyor.base-image=debian-{suite}", ctr), log)
        commit_archive(ctr, archive, log)
    return archive


@contextmanager
def working_container(image: str, name: str, log: Callable[[str], None], *flags: str) -> Iterator[str]:
    """A buildah working container from ``image``, removed when the block ends (after a commit with
    ``--rm`` it is gone already and the removal does nothing)."""
    ctr = _run(buildah("from", *flags, "--name", name, image), log).strip()
    try:
        yield ctr
    finally:
        subprocess.run(buildah("rm", ctr), capture_output=True)


def commit_archive(ctr: str, archive: Path, log: Callable[[str], None]) -> None:
    """Commit the working container to an OCI archive, atomically: a reader never sees half of one."""
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _run(buildah("commit", "--rm", ctr, f"oci-archive:{partial}"), log)
    os.replace(partial, archive)


def push_archive(archive: Path, registry_host: str, tag: str, user: str, token: str,
                 log: Callable[[str], None] = print) -> str:
    """Copy an OCI archive into a (plain-HTTP) registry under ``tag``; returns the manifest digest."""
    with tempfile.TemporaryDirectory() as tmp:
        digest_file = Path(tmp) / "digest"
        _run(skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"{user}:{token}",
                    "--digestfile", str(digest_file), f"oci-archive:{archive}",
                    f"docker://{registry_host}/{tag}"), log, secret=token)
        digest = digest_file.read_text().strip()
    log(f"imported {tag} ({digest})")
    return digest

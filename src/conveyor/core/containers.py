"""Command lines for podman, buildah and skopeo with the settings these machines need, in one place.

Measured on the project's machines: podman needs ``--runtime runc`` and ulimits at or below the
hard limits; the overlay storage driver is unavailable to them, so images live in ``vfs`` storage.
buildah runs a Dockerfile's ``RUN`` lines with ``--isolation oci`` (runc, like podman): measured
here, its ``chroot`` isolation left the host's /proc visible to them (``ls /proc/1/root`` reached the
host's init), which a pull request's Dockerfile must never see. Every component builds its argv
here, so a machine with other needs changes one file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

STORAGE_DRIVER = "vfs"
ULIMITS = ("nofile=1024:1024", "nproc=4096:4096")


def runroot_for(root: str) -> str:
    """Podman refuses run roots longer than 50 characters, so the one of ``root`` is a short hashed path."""
    base = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
    return f"{base}/conveyor-{hashlib.sha256(root.encode()).hexdigest()[:12]}"


def _storage(root: str | None) -> list[str]:
    """A private containers-storage under ``root`` (instead of the machine's shared one)."""
    return ["--root", f"{root}/storage", "--runroot", runroot_for(root)] if root else []


def podman(*args: str, root: str | None = None) -> list[str]:
    """``podman <args>``; for ``run``/``create`` the runtime and ulimits are added after the verb."""
    argv = ["podman", "--storage-driver", STORAGE_DRIVER, *_storage(root)]
    if args and args[0] in ("run", "create"):
        argv += [args[0], "--runtime", "runc"]
        for limit in ULIMITS:
            argv += ["--ulimit", limit]
        return argv + list(args[1:])
    return argv + list(args)


def buildah(*args: str, root: str | None = None) -> list[str]:
    """``buildah <args>``; building verbs get OCI (runc) isolation."""
    argv = ["buildah", "--storage-driver", STORAGE_DRIVER, *_storage(root)]
    if args and args[0] in ("bud", "build", "build-using-dockerfile", "run"):
        return [*argv, args[0], "--isolation", "oci", "--runtime", "runc", *args[1:]]
    return argv + list(args)


def skopeo(*args: str) -> list[str]:
    return ["skopeo", *args]

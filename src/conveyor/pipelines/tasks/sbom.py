"""The SBOM of a built image (its Debian and Python packages), attached to it as an OCI referrer.

Made by the ``publish`` step from the image in the runner's container storage: the image is mounted
read-only through ``buildah from`` + ``buildah mount`` (nothing in it runs), dpkg's status database is
read with python-debian and every ``*.dist-info`` / ``*.egg-info`` under a ``site-packages`` or
``dist-packages`` directory with ``importlib.metadata``. The document is CycloneDX 1.6 JSON
(cyclonedx-python-lib) with package URLs (``pkg:deb/debian/...``, ``pkg:pypi/...``); it is pushed
with the run's token as an artifact manifest whose ``subject`` is the image, so the OCI 1.1
referrers API lists it next to the image (``artifactType: application/vnd.cyclonedx+json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import warnings
from collections.abc import AsyncIterator, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from debian import deb822
from packageurl import PackageURL

from conveyor.core.containers import buildah
from conveyor.registry.client import RegistryClient

SBOM_TYPE = "application/vnd.cyclonedx+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SKIP = ("proc", "sys", "dev", "run", "tmp")


def debian_packages(root: Path) -> list[Component]:
    status = root / "var/lib/dpkg/status"
    if not status.is_file():
        return []
    out = []
    with open(status, encoding="utf-8", errors="replace") as f:
        for para in deb822.Packages.iter_paragraphs(f, use_apt_pkg=False):
            if "install ok installed" not in para.get("Status", ""):
                continue
            name, version, arch = para.get("Package"), para.get("Version"), para.get("Architecture", "")
            if not name or not version:
                continue
            purl = PackageURL("deb", "debian", name, version, {"arch": arch} if arch else None)
            out.append(Component(name=name, version=version, type=ComponentType.LIBRARY, purl=purl,
                                 bom_ref=purl.to_string()))
    return out


def _site_dirs(root: Path) -> Iterator[Path]:
    for top in ("usr", "opt", "app", "srv", "home", "root", "venv"):
        base = root / top
        if not base.is_dir():
            continue
        for dirpath, dirnames, _files in os.walk(base):
            here = Path(dirpath)
            if here.name in ("site-packages", "dist-packages"):
                dirnames[:] = []
                yield here
            elif len(here.relative_to(root).parts) > 8:
                dirnames[:] = []


def python_packages(root: Path) -> list[Component]:
    seen: set[tuple[str, str]] = set()
    out = []
    for site in _site_dirs(root):
        for dist in metadata.distributions(path=[str(site)]):
            name, version = dist.metadata["Name"], dist.version
            if not name or not version or (name.lower(), version) in seen:
                continue
            seen.add((name.lower(), version))
            purl = PackageURL("pypi", None, name.lower().replace("_", "-"), version)
            out.append(Component(name=name, version=version, type=ComponentType.LIBRARY, purl=purl,
                                 bom_ref=purl.to_string()))
    return out


def document(root: Path, image: str, digest: str) -> bytes:
    bom = Bom()
    bom.metadata.component = Component(name=image, version=digest, type=ComponentType.CONTAINER,
                                       bom_ref=f"{image}@{digest}")
    for c in debian_packages(root) + python_packages(root):
        bom.components.add(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no dependency graph: a flat inventory of what is installed
        return JsonV1Dot6(bom).output_as_string(indent=None).encode()


def from_image(image_id: str, storage_root: str, image: str, digest: str) -> bytes:
    """The SBOM of a local image, read from its mounted root filesystem."""
    ctr = subprocess.run(buildah("from", "--pull-never", image_id, root=storage_root), capture_output=True,
                         text=True, timeout=300, check=True).stdout.strip()
    try:
        mount = subprocess.run(buildah("mount", ctr, root=storage_root), capture_output=True, text=True,
                               timeout=120, check=True).stdout.strip()
        return document(Path(mount), image, digest)
    finally:
        subprocess.run(buildah("rm", ctr, root=storage_root), capture_output=True, timeout=120)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def referrer_manifest(sbom_digest: str, sbom_size: int, subject: dict[str, Any]) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM_TYPE,
           "config": {"mediaType": EMPTY_TYPE, "digest": _digest(EMPTY), "size": len(EMPTY)},
           "layers": [{"mediaType": SBOM_TYPE, "digest": sbom_digest, "size": sbom_size,
                       "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"}}],
           "subject": subject, "annotations": {"dev.conveyor/sbom-format": "CycloneDX 1.6"}}
    return json.dumps(doc, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


async def attach(registry: str, token: str, repository: str, digest: str, sbom: bytes, tls: bool) -> str:
    """Push ``sbom`` as a referrer of ``repository@digest``; returns the referrer's digest."""
    client = RegistryClient(f"{'https' if tls else 'http'}://{registry}", bearer=token, timeout=120)
    try:
        subject = await client.get_manifest(repository, digest)
        for blob in (EMPTY, sbom):
            await client.push_blob(repository, _digest(blob), len(blob), _chunks(blob))
        body = referrer_manifest(_digest(sbom), len(sbom), {"mediaType": subject.media_type, "digest": digest,
                                                            "size": len(subject.body)})
        return await client.put_manifest(repository, _digest(body), body, OCI_MANIFEST)
    finally:
        await client.close()


def attach_sync(registry: str, token: str, repository: str, digest: str, sbom: bytes, tls: bool) -> str:
    return asyncio.run(attach(registry, token, repository, digest, sbom, tls))

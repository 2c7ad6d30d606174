"""Helpers for registry tests: a plain HTTP client that speaks the OCI API, and test content."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import ServerHandle

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    manifest: bytes
    media_type: str = OCI_MANIFEST

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]


def make_image(
    layers: int = 2,
    size: int = 2048,
    *,
    docker: bool = False,
    subject: dict[str, Any] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> Image:
    """A small image with random layers (unique content each call)."""
    layer_data = [os.urandom(size) for _ in range(layers)]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(x) for x in layer_data]},
        "config": {"Labels": {"nonce": uuid.uuid4().hex}},
    }).encode()
    mt, cmt, lmt = (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER) if docker else (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt,
        "config": descriptor(cmt, config),
        "layers": [descriptor(lmt, x) for x in layer_data],
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject:
        doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    return Image(config=config, layers=layer_data, manifest=json.dumps(doc, indent=1).encode(), media_type=mt)


def make_index(images: list[Image], docker: bool = False) -> bytes:
    platforms = [{"os": "linux", "architecture": a} for a in ("amd64", "arm64", "riscv64", "s390x")]
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST if docker else OCI_INDEX,
        "manifests": [
            {**descriptor(img.media_type, img.manifest), "platform": platforms[i % len(platforms)]}
            for i, img in enumerate(images)
        ],
    }).encode()


@dataclass
class Registry:
    """The OCI API of a test server, spoken with plain httpx (Basic auth with a user's token)."""

    server: ServerHandle
    user: str = "admin"
    token: str | None = None
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        auth = None if self.token == "" else (self.user, self.token or self.server.admin_token)
        self.http = httpx.Client(base_url=self.server.url, auth=auth, timeout=120)

    def close(self) -> None:
        self.http.close()

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        r = self.http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data,
                           headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return digest

    def start_upload(self, repo: str) -> str:
        r = self.http.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        return str(r.headers["location"])

    def push_manifest(self, repo: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST) -> httpx.Response:
        return self.http.put(f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})

    def push_image(self, repo: str, tag: str, image: Image) -> str:
        for b in image.blobs:
            self.push_blob(repo, b)
        r = self.push_manifest(repo, tag, image.manifest, image.media_type)
        assert r.status_code == 201, r.text
        return str(r.headers["docker-content-digest"])

    def get_manifest(self, repo: str, ref: str) -> httpx.Response:
        accept = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
        return self.http.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept})

    def blob_status(self, repo: str, digest: str) -> int:
        return self.http.head(f"/v2/{repo}/blobs/{digest}").status_code


def error_codes(resp: httpx.Response) -> list[str]:
    return [e["code"] for e in resp.json()["errors"]]


def write_oci_layout(root: Path, image: Image, ref: str = "latest") -> Path:
    """An OCI image layout holding ``image`` under ``ref`` (as skopeo/buildah would write it)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for data in [*image.blobs, image.manifest]:
        (blobs / sha256(data).split(":")[1]).write_bytes(data)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [{**descriptor(image.media_type, image.manifest),
                       "annotations": {"org.opencontainers.image.ref.name": ref}}],
    }
    (root / "index.json").write_text(json.dumps(index))
    return root


def tar_directory(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w") as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return dest

"""Verifying the images a revision references before the agent applies it.

Every container image of every workload in the revision (Pods and the templates of Deployments,
StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs; init and ephemeral containers too) is looked at.
Images in a Conveyor-built repository (``apps/...`` on one of ``signatures.registries``, by default the
forge's host) must carry a signature, in cosign's format (``imagesig``), by one of the installation's
trusted keys, over the digest the reference names (a tag is resolved to its digest first). Other
images were not built by Conveyor and are listed as ``unchecked``.

What a failure does is the sync's ``verify`` policy: ``enforce`` (the default) refuses the whole
revision, naming the image, before anything is applied; ``warn`` applies it and records the failure;
``off`` skips the check. Trusted keys come from the forge (``/api/v1/registry/signing-keys``, retired
keys included, revoked ones not), or from a pinned ``keys_file``; the last good set is kept in the
state dir, so a restart during a forge outage still verifies.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from conveyor.agent import imagesig
from conveyor.agent.config import Policy

__all__ = ["Policy"]

log = logging.getLogger("conveyor.agent.verify")

ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"])
POD_TEMPLATES = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
KEYS_TTL = 60.0
RESULT_TTL = 600.0


@dataclass(frozen=True)
class ImageRef:
    host: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        name, _, digest = ref.partition("@")
        first, sep, rest = name.partition("/")
        host = first if sep and ("." in first or ":" in first or first == "localhost") else ""
        path = rest if host else name
        repo, colon, tag = path.rpartition(":")
        if not colon or "/" in tag:
            repo, tag = path, ""
        return cls(host, repo, tag or None, digest or None)


@dataclass(frozen=True)
class ImageResult:
    image: str
    result: str  # verified | unchecked | unsigned | foreign-signature | digest-mismatch | unavailable
    message: str
    digest: str | None = None
    key_id: str | None = None

    @property
    def failed(self) -> bool:
        return self.result not in ("verified", "unchecked")


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind in POD_TEMPLATES:
        yield (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        yield (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}


def images_of(objects: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for obj in objects:
        for spec in pod_specs(obj):
            for key in ("initContainers", "containers", "ephemeralContainers"):
                for c in spec.get(key) or []:
                    if isinstance(c, dict) and isinstance(c.get("image"), str):
                        seen.setdefault(c["image"], None)
    return list(seen)


class ImageSource(Protocol):
    """Reads a registry: over HTTP in the agent, in process on the server (the GitOps PR's check)."""

    def manifest(self, host: str, repository: str, reference: str) -> tuple[bytes, str] | None:
        """(body, digest) of a manifest, None when it does not exist; raises OSError when unreachable."""
        ...

    def blob(self, host: str, repository: str, digest: str, limit: int) -> bytes | None: ...


class HttpSource:
    """The OCI Distribution API, with the agent's own token for Conveyor's registry."""

    def __init__(self, tokens: dict[str, str], insecure_hosts: set[str], endpoints: dict[str, str] | None = None
                 ) -> None:
        self.tokens, self.insecure, self.endpoints = tokens, insecure_hosts, endpoints or {}
        self.http = httpx.Client(timeout=httpx.Timeout(20.0, connect=5.0), follow_redirects=True)

    def close(self) -> None:
        self.http.close()

    def _url(self, host: str, path: str) -> tuple[str, dict[str, str]]:
        host = self.endpoints.get(host, host)  # tokens and plain HTTP go by the address actually dialled
        scheme = "http" if host in self.insecure else "https"
        headers = {"Authorization": f"Bearer {self.tokens[host]}"} if host in self.tokens else {}
        return f"{scheme}://{host}/v2/{path}", headers

    def manifest(self, host: str, repository: str, reference: str) -> tuple[bytes, str] | None:
        url, headers = self._url(host, f"{repository}/manifests/{reference}")
        try:
            r = self.http.get(url, headers={**headers, "Accept": ACCEPT})
        except httpx.HTTPError as exc:
            raise OSError(f"{host}: {exc}") from exc
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise OSError(f"{host}/{repository}:{reference}: HTTP {r.status_code}")
        import hashlib

        return r.content, "sha256:" + hashlib.sha256(r.content).hexdigest()

    def blob(self, host: str, repository: str, digest: str, limit: int) -> bytes | None:
        url, headers = self._url(host, f"{repository}/blobs/{digest}")
        try:
            with self.http.stream("GET", url, headers=headers) as r:
                if r.status_code >= 400:
                    return None
                data = b""
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) > limit:
                        return None
                return data
        except httpx.HTTPError as exc:
            raise OSError(f"{host}: {exc}") from exc


def signature_layers(source: ImageSource, host: str, repository: str, digest: str) -> list[tuple[bytes, str]]:
    """The (payload, signature) pairs stored for ``repository@digest``, payloads checked against their digests."""
    found = source.manifest(host, repository, imagesig.signature_tag(digest))
    if found is None:
        return []
    try:
        layers = json.loads(found[0]).get("layers") or []
    except ValueError:
        return []
    out = []
    import hashlib

    for layer in layers:
        sig = (layer.get("annotations") or {}).get(imagesig.SIGNATURE_ANNOTATION)
        if layer.get("mediaType") != imagesig.SIMPLE_SIGNING or not sig:
            continue
        data = source.blob(host, repository, str(layer.get("digest")), imagesig.MAX_PAYLOAD)
        if data is not None and "sha256:" + hashlib.sha256(data).hexdigest() == layer.get("digest"):
            out.append((data, str(sig)))
    return out


def check_image(source: ImageSource, ref: ImageRef, image: str, keys: list[imagesig.TrustedKey]) -> ImageResult:
    digest = ref.digest
    if digest is None:
        found = source.manifest(ref.host, ref.repository, ref.tag or "latest")
        if found is None:
            return ImageResult(image, "unsigned", f"{image} does not exist in its registry")
        digest = found[1]
    v = imagesig.check_layers(ref.repository, digest, signature_layers(source, ref.host, ref.repository, digest), keys)
    return ImageResult(image, v.reason, v.message, digest, v.key_id)


class KeyRing:
    """The installation's trusted public keys, from the forge (cached, kept on disk) or a pinned file."""

    def __init__(self, forge: str | None, token: str | None, keys_file: Path | None, cache: Path | None) -> None:
        self.forge, self.token, self.keys_file, self.cache = forge, token, keys_file, cache
        self._keys: list[imagesig.TrustedKey] | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def keys(self, refresh: bool = False) -> list[imagesig.TrustedKey]:
        with self._lock:
            if self._keys is not None and not refresh and time.monotonic() - self._at < KEYS_TTL:
                return self._keys
            self._keys, self._at = self._load(), time.monotonic()
            return self._keys

    def _load(self) -> list[imagesig.TrustedKey]:
        if self.keys_file is not None:
            text = self.keys_file.read_text()
            blocks = [b + "-----END PUBLIC KEY-----\n" for b in text.split("-----END PUBLIC KEY-----") if "BEGIN" in b]
            return [imagesig.TrustedKey(imagesig.key_id(b.strip().encode() + b"\n"), b.strip().encode() + b"\n")
                    for b in blocks]
        rows: list[dict[str, Any]] | None = None
        if self.forge:
            try:
                r = httpx.get(f"{self.forge}/api/v1/registry/signing-keys", timeout=10,
                              headers={"Authorization": f"Bearer {self.token}"} if self.token else {})
                if r.status_code == 200:
                    rows = list(r.json())
                    if self.cache is not None:
                        self.cache.parent.mkdir(parents=True, exist_ok=True)
                        self.cache.write_text(json.dumps(rows))
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("signing keys not fetched from %s: %s", self.forge, exc)
        if rows is None and self.cache is not None and self.cache.exists():
            rows = json.loads(self.cache.read_text())
        if rows is None:
            raise OSError("the installation's signing keys are unavailable (forge unreachable, nothing cached)")
        return [imagesig.TrustedKey(str(k["key_id"]), str(k["public_key"]).encode(), str(k["state"]))
                for k in rows if k.get("state") in ("active", "retired")]


class Keys(Protocol):
    def keys(self, refresh: bool = False) -> list[imagesig.TrustedKey]: ...


class Verifier:
    """Checks a revision's images; results of verified digests are remembered for ``RESULT_TTL``."""

    def __init__(self, source: ImageSource, keyring: Keys, registries: set[str]) -> None:
        self.source, self.keyring, self.registries = source, keyring, registries
        self._verified: dict[tuple[str, str, str], tuple[float, tuple[str, ...], ImageResult]] = {}

    def conveyor_built(self, ref: ImageRef) -> bool:
        return ref.host in self.registries and ref.repository.startswith("apps/")

    def check(self, objects: list[dict[str, Any]]) -> list[ImageResult]:
        out = []
        for image in images_of(objects):
            ref = ImageRef.parse(image)
            if not self.conveyor_built(ref):
                out.append(ImageResult(image, "unchecked", f"{image} is not built by Conveyor: not checked"))
                continue
            out.append(self._check(ref, image))
        return out

    def _check(self, ref: ImageRef, image: str) -> ImageResult:
        try:
            keys = self.keyring.keys()
        except OSError as exc:
            return ImageResult(image, "unavailable", f"{image}: cannot verify its signature: {exc}")
        trusted = tuple(k.key_id for k in keys)  # a revoked key drops out of it: nothing it verified is reused
        key = (ref.host, ref.repository, ref.digest or "")
        hit = self._verified.get(key)
        if hit and ref.digest and hit[1] == trusted and time.monotonic() - hit[0] < RESULT_TTL:
            return hit[2]
        try:
            result = check_image(self.source, ref, image, keys)
            if result.result == "foreign-signature":  # perhaps signed by a key rotated in since
                result = check_image(self.source, ref, image, self.keyring.keys(refresh=True))
        except OSError as exc:
            return ImageResult(image, "unavailable", f"{image}: cannot verify its signature: {exc}")
        if result.result == "verified":
            self._verified[key] = (time.monotonic(), trusted, result)
        return result


def as_dicts(results: list[ImageResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]

"""``conveyor registry import SOURCE DEST``: copy an image (or index) into Conveyor.

Sources use skopeo's transport syntax: ``docker://HOST/REPO[:TAG|@DIGEST]`` (another registry),
``oci:DIR[:REF]`` (an OCI image layout) and ``oci-archive:FILE[:REF]`` (a tar of one). Blobs
stream from the source to Conveyor, which verifies every digest; manifests are copied byte-exact.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from conveyor.registry import mediatypes
from conveyor.registry.client import FetchedManifest, RegistryClient, RegistryClientError, _digest_of
from conveyor.registry.names import split_reference

REF_ANNOTATION = "org.opencontainers.image.ref.name"


class ImportError_(Exception):
    pass


class Source(Protocol):
    async def manifest(self, ref: str) -> FetchedManifest: ...
    async def blob(self, digest: str) -> tuple[int, AsyncIterator[bytes]]: ...
    async def close(self) -> None: ...


class Destination(Protocol):
    async def push_blob(self, repo: str, digest: str, size: int, chunks: AsyncIterator[bytes]) -> None: ...
    async def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str: ...


@dataclass
class RegistrySource:
    client: RegistryClient
    repo: str

    async def manifest(self, ref: str) -> FetchedManifest:
        return await self.client.get_manifest(self.repo, ref or "latest")

    async def blob(self, digest: str) -> tuple[int, AsyncIterator[bytes]]:
        size = await self.client.blob_size(self.repo, digest)
        if size is None:
            raise ImportError_(f"the source has no blob {digest}")
        return size, self.client.stream_blob(self.repo, digest)

    async def close(self) -> None:
        await self.client.close()


class LayoutSource:
    def __init__(self, root: Path, cleanup: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.root = root
        self._cleanup = cleanup
        try:
            self.index = json.loads((root / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise ImportError_(f"{root} is not an OCI image layout: {exc}") from None

    def _path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if not hexpart or "/" in hexpart or "/" in algo:
            raise ImportError_(f"invalid digest {digest!r} in the layout")
        return self.root / "blobs" / algo / hexpart

    def top(self, ref: str | None) -> dict[str, object]:
        entries = self.index.get("manifests", [])
        if ref:
            for e in entries:
                if (e.get("annotations") or {}).get(REF_ANNOTATION) == ref or e.get("digest") == ref:
                    return dict(e)
            raise ImportError_(f"the layout has no image named '{ref}'")
        if len(entries) != 1:
            raise ImportError_(f"the layout holds {len(entries)} images; name one with :REF")
        return dict(entries[0])

    async def manifest(self, ref: str) -> FetchedManifest:
        desc: dict[str, object] = {"digest": ref} if ref.startswith(("sha256:", "sha512:")) else self.top(ref)
        digest = str(desc["digest"])
        try:
            body = self._path(digest).read_bytes()
        except OSError:
            raise ImportError_(f"the layout has no manifest {digest}") from None
        algorithm = digest.split(":", 1)[0]
        if _digest_of(body, algorithm) != digest:
            raise ImportError_(f"manifest {digest} in the layout is corrupt")
        media_type = str(desc.get("mediaType") or json.loads(body).get("mediaType") or mediatypes.OCI_MANIFEST)
        return FetchedManifest(body=body, media_type=media_type, digest=digest)

    async def blob(self, digest: str) -> tuple[int, AsyncIterator[bytes]]:
        path = self._path(digest)
        try:
            size = path.stat().st_size
        except OSError:
            raise ImportError_(f"the layout has no blob {digest}") from None

        async def chunks() -> AsyncIterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        return size, chunks()

    async def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cleanup()


def _split_path_ref(spec: str) -> tuple[str, str | None]:
    path, sep, ref = spec.rpartition(":")
    if sep and path and "/" not in ref:
        return path, ref
    return spec, None


def open_source(spec: str, username: str | None = None, password: str | None = None,
                insecure: bool = False) -> tuple[Source, str | None]:
    """The source for ``spec`` and the reference (tag or digest) to copy from it."""
    if spec.startswith("docker://"):
        rest = spec[len("docker://"):]
        host, _, path = rest.partition("/")
        if not path:
            raise ImportError_("docker:// sources look like docker://HOST/REPO[:TAG]")
        repo, tag_or_digest = split_reference(path)
        client = RegistryClient(f"{'http' if insecure else 'https'}://{host}", username, password,
                                verify=not insecure, timeout=120)
        return RegistrySource(client, repo), tag_or_digest
    if spec.startswith("oci:"):
        layout, ref = _split_path_ref(spec[len("oci:"):])
        return LayoutSource(Path(layout)), ref
    if spec.startswith("oci-archive:"):
        path, ref = _split_path_ref(spec[len("oci-archive:"):])
        tmp = tempfile.TemporaryDirectory(prefix="conveyor-import-")
        try:
            with tarfile.open(path) as tar:
                tar.extractall(tmp.name, filter="data")
        except (OSError, tarfile.TarError) as exc:
            tmp.cleanup()
            raise ImportError_(f"cannot read OCI archive {path}: {exc}") from None
        return LayoutSource(Path(tmp.name), cleanup=tmp), ref
    raise ImportError_(f"unknown source '{spec}': use docker://, oci: or oci-archive:")


async def copy(source: Source, ref: str | None, dest: Destination, dest_repo: str, dest_tag: str) -> str:
    """Copy ``ref`` from ``source`` to ``dest_repo:dest_tag``; returns the manifest digest."""
    top = await source.manifest(ref or "")
    await _copy_children(source, top, dest, dest_repo, depth=0)
    digest = await dest.put_manifest(dest_repo, dest_tag, top.body, top.media_type)
    if digest != top.digest and top.digest.startswith("sha256:"):
        raise ImportError_(f"the destination stored {digest}, the source manifest is {top.digest}")
    return top.digest


async def _copy_children(source: Source, m: FetchedManifest, dest: Destination, repo: str, depth: int) -> None:
    if depth > 8:
        raise ImportError_("manifest nesting is too deep")
    parsed = mediatypes.parse(m.body, m.media_type)
    for child in parsed.children:
        fetched = await source.manifest(child.digest)
        await _copy_children(source, fetched, dest, repo, depth + 1)
        await dest.put_manifest(repo, child.digest, fetched.body, fetched.media_type)
    for blob in parsed.blobs:
        if blob.foreign:
            continue
        size, chunks = await source.blob(blob.digest)
        try:
            await dest.push_blob(repo, blob.digest, size, chunks)
        except RegistryClientError as exc:
            raise ImportError_(f"copying blob {blob.digest}: {exc}") from None

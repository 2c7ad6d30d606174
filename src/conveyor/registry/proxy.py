"""Pull-through cache: repositories under an upstream's prefix mirror another registry.

``PREFIX/some/repo`` is ``some/repo`` upstream (under the upstream URL's path, if it has one).
Manifests by digest and blobs are fetched once, verified against their digest and stored;
after that they are served locally whether or not the upstream is reachable. A tag is
re-resolved upstream at most every ``TAG_FRESH`` seconds; when the upstream cannot be reached
the cached tag keeps being served.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from datetime import datetime, timedelta

import httpx
from anyio import to_thread
from sqlalchemy import select

from conveyor.core import AsyncOutboundTransport, OutboundPolicy, utcnow
from conveyor.core.outbound import body_excerpt, status_summary
from conveyor.registry import blobs, manifests
from conveyor.registry.asgi import Request
from conveyor.registry.client import DigestMismatch, RegistryClient, RegistryClientError
from conveyor.registry.errors import RegistryError, blob_unknown, manifest_unknown
from conveyor.registry.manifests import StoredManifest
from conveyor.registry.models import RegistryRepository, Tag
from conveyor.registry.names import looks_like_digest
from conveyor.registry.repos import in_transaction
from conveyor.registry.service import Registry, UpstreamConfig

log = logging.getLogger(__name__)

TAG_FRESH = timedelta(seconds=30)
UPSTREAM_TIMEOUT = 20.0


def _upstream_error(up: UpstreamConfig, exc: Exception, reveal: bool) -> RegistryError:
    """The 502 a puller sees: what failed and the upstream's status code. The upstream's answer
    itself only for admins (``reveal``): an upstream may be an internal service, and its body
    must not leak to every developer who can pull through it (issue 13)."""
    message = f"upstream {up.url} failed: {exc}"
    excerpt = getattr(exc, "excerpt", None)
    if reveal and excerpt:
        message += f" (upstream said: {excerpt})"
    if excerpt:
        log.warning("upstream %s failed: %s; it answered: %s", up.url, exc, excerpt)
    return RegistryError("UNKNOWN", message, status=502)


class Proxy:
    def __init__(self, registry: Registry) -> None:
        self.reg = registry
        self._clients: dict[tuple[str, str, str | None, str | None], RegistryClient] = {}
        self.policy = OutboundPolicy.for_database(registry.db, registry.settings)

    def _client(self, up: UpstreamConfig) -> RegistryClient:
        key = (up.prefix, up.url, up.username, up.password)
        client = self._clients.get(key)
        if client is None:
            client = RegistryClient(up.url, up.username, up.password, timeout=UPSTREAM_TIMEOUT,
                                    transport=AsyncOutboundTransport(self.policy))
            self._clients[key] = client
        return client

    @staticmethod
    def _remote_name(up: UpstreamConfig, name: str) -> str:
        return name[len(up.prefix) + 1:]

    def _local(self, name: str, ref: str) -> tuple[StoredManifest | None, datetime | None]:
        with self.reg.reads() as s:
            try:
                found = manifests.lookup(s, name, ref, with_content=True)
            except RegistryError:
                return None, None
            checked = None
            if not looks_like_digest(ref):
                checked = s.execute(
                    select(Tag.checked_at).join(RegistryRepository, RegistryRepository.id == Tag.repo_id)
                    .where(RegistryRepository.name == name, Tag.name == ref)
                ).scalar_one_or_none()
            return found, checked

    async def manifest(
        self, up: UpstreamConfig, name: str, ref: str, with_content: bool, reveal: bool = False
    ) -> StoredManifest:
        local, checked = await to_thread.run_sync(self._local, name, ref)
        if local is not None and (looks_like_digest(ref) or (checked and utcnow() - checked < TAG_FRESH)):
            return local
        remote = self._remote_name(up, name)
        try:
            fetched = await self._client(up).get_manifest(remote, ref)
        except DigestMismatch as exc:
            log.error("upstream %s sent a manifest that does not match its digest: %s", up.url, exc)
            raise RegistryError("MANIFEST_INVALID", "the upstream sent a manifest that fails verification",
                                status=502) from None
        except RegistryClientError as exc:
            if exc.status == 404:
                raise manifest_unknown(ref) from None
            if local is not None:
                log.warning("upstream %s failed (%s); serving the cached %s:%s", up.url, exc, name, ref)
                return local
            raise _upstream_error(up, exc, reveal) from None
        except httpx.HTTPError as exc:
            if local is not None:
                log.warning("upstream %s unreachable (%s); serving the cached %s:%s", up.url, exc, name, ref)
                return local
            raise _upstream_error(up, exc, reveal) from None

        def store() -> None:
            in_transaction(self.reg.db, lambda s: manifests.put(
                s, name, ref, fetched.body, fetched.media_type, f"cache:{up.prefix}", verify_references=False))

        await to_thread.run_sync(store)
        return StoredManifest(digest=fetched.digest, media_type=fetched.media_type, size=len(fetched.body),
                              content=fetched.body)

    def _adopt(self, name: str, digest: str) -> int | None:
        """A blob already in the store (fetched for another repository) is linked, not refetched."""
        size = self.reg.store.size(digest)
        if size is None:
            return None
        if blobs.mount(self.reg, name, "cache", digest, None):
            return size
        return None

    async def blob(
        self, req: Request, up: UpstreamConfig, name: str, digest: str, reveal: bool = False
    ) -> int | None:
        """Make ``digest`` available in ``name``: returns its size when it is now local (the caller
        serves it), or streams it from the upstream to the client while caching it (None)."""
        size = await to_thread.run_sync(self._adopt, name, digest)
        if size is not None:
            return size
        client = self._client(up)
        remote = self._remote_name(up, name)
        if req.head:
            try:
                remote_size = await client.blob_size(remote, digest)
            except (RegistryClientError, httpx.HTTPError) as exc:
                raise _upstream_error(up, exc, reveal) from None
            if remote_size is None:
                raise blob_unknown(digest)
            await req.respond(200, [("docker-content-digest", digest)], content_type="application/octet-stream",
                              content_length=remote_size)
            return None
        await self._stream_and_cache(req, up, client, remote, name, digest, reveal)
        return None

    async def _stream_and_cache(
        self, req: Request, up: UpstreamConfig, client: RegistryClient, remote: str, name: str, digest: str,
        reveal: bool,
    ) -> None:
        algorithm, _, want = digest.partition(":")
        tmp = self.reg.store.tmp_dir / f"{uuid.uuid4().hex}.part"
        f = await to_thread.run_sync(lambda: open(tmp, "wb"))  # noqa: SIM115
        published = False
        try:
            try:
                async with client.http.stream("GET", f"/v2/{client._repo(remote)}/blobs/{digest}") as resp:
                    if resp.status_code == 404:
                        raise blob_unknown(digest)
                    if resp.status_code >= 400:
                        await resp.aread()
                        raise _upstream_error(up, RegistryClientError(
                            status_summary(resp.status_code), resp.status_code, body_excerpt(resp.content)), reveal)
                    headers = [("docker-content-digest", digest), ("content-type", "application/octet-stream")]
                    length = resp.headers.get("content-length")
                    if length is not None:
                        headers.append(("content-length", length))
                    h = hashlib.new(algorithm)
                    size = 0
                    await req.start(200, headers)
                    # The last piece is held back until the blob is verified and stored: a client
                    # never receives a complete body that failed verification, and one that did
                    # receive it can rely on the blob being cached.
                    held = b""
                    async for chunk in resp.aiter_bytes(1 << 20):
                        h.update(chunk)
                        size += len(chunk)
                        await to_thread.run_sync(f.write, chunk)
                        if held:
                            await req.write(held)
                        held = chunk
            except httpx.HTTPError as exc:
                raise _upstream_error(up, exc, reveal) from None
            if h.hexdigest() != want:
                log.error("upstream %s sent blob %s with digest %s:%s; not cached", up.url, digest, algorithm,
                          h.hexdigest())
                raise DigestMismatch(f"blob {digest} failed verification")
            await to_thread.run_sync(os.fsync, f.fileno())
            await to_thread.run_sync(
                blobs.commit_blob, self.reg, name, f"cache:{up.prefix}", digest, size,
                blobs.publish_file(self.reg, tmp, digest))
            published = True
            await req.write(held, more=False)
        finally:
            f.close()
            if not published:
                tmp.unlink(missing_ok=True)

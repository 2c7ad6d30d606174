"""The OCI Distribution API (v1.1) served at ``/v2``.

A raw ASGI app rather than FastAPI routes: the spec's error bodies, its exact headers and
streaming of arbitrarily large bodies in both directions are all under direct control here.
Blocking work (database, disk, hashing) runs in worker threads; request bodies are hashed
and written as they arrive and responses are streamed from disk in fixed-size pieces, so
memory stays flat whatever the blob size.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from anyio import to_thread
from sqlalchemy.orm import Session

from conveyor.core import Principal, Role, record
from conveyor.registry import access, blobs, lookups, manifests, mediatypes, tokens
from conveyor.registry.access import Action
from conveyor.registry.asgi import ClientGone, Receive, Request, Scope, Send, gather_writes
from conveyor.registry.errors import RegistryError, blob_unknown
from conveyor.registry.names import Digest, check_name, parse_digest
from conveyor.registry.proxy import Proxy
from conveyor.registry.repos import in_transaction
from conveyor.registry.service import Registry, UpstreamConfig, upstream_for
from conveyor.registry.uploads import ChunkWriter

log = logging.getLogger(__name__)
T = TypeVar("T")

_ROUTE = re.compile(
    r"^/v2/(?P<name>.+?)/(?:"
    r"blobs/uploads(?:/(?P<upload>[^/]*))?"
    r"|blobs/(?P<digest>[^/]+)"
    r"|manifests/(?P<ref>[^/]+)"
    r"|(?P<tags>tags/list)"
    r"|referrers/(?P<subject>[^/]+)"
    r")$"
)
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
READ_CHUNK = 1 << 20
WRITE_BATCH = 1 << 20
MAX_TAG_PAGE = 10_000


def _unsupported(method: str) -> RegistryError:
    return RegistryError("UNSUPPORTED", f"method {method} is not supported here", status=405)


def _octet_headers(digest: str) -> list[tuple[str, str]]:
    return [("docker-content-digest", digest), ("accept-ranges", "bytes")]


class RegistryApp:
    def __init__(self, registry: Registry) -> None:
        self.reg = registry
        self.proxy = Proxy(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        req = Request(scope, receive, send, self.reg.settings.public_url)
        try:
            await self._dispatch(req)
        except ClientGone:
            return
        except RegistryError as err:
            await self._fail(req, err)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("registry storage is full: %s", exc)
                await self._fail(req, RegistryError(
                    "BLOB_UPLOAD_INVALID", "insufficient storage on the registry", status=507))
            else:
                log.exception("registry request %s %s failed", req.method, req.path)
                await self._fail(req, RegistryError("UNKNOWN", "internal error", status=500))
        except Exception:
            log.exception("registry request %s %s failed", req.method, req.path)
            await self._fail(req, RegistryError("UNKNOWN", "internal error", status=500))

    async def _fail(self, req: Request, err: RegistryError) -> None:
        if req.started:
            return  # too late for a status; the client sees a truncated body and retries
        if err.status == 401 and "WWW-Authenticate" not in err.headers:
            err.headers["WWW-Authenticate"] = access.challenge(req.realm)
        await req.fail(err)

    # -- routing ------------------------------------------------------------------------------

    async def _dispatch(self, req: Request) -> None:
        path, method = req.path, req.method
        if path in ("/v2", "/v2/"):
            if method not in ("GET", "HEAD"):
                raise _unsupported(method)
            return await self._ping(req)
        if path == "/v2/token":
            if method not in ("GET", "POST"):
                raise _unsupported(method)
            return await self._token(req)
        if path == "/v2/_catalog":
            if method != "GET":
                raise _unsupported(method)
            return await self._catalog(req)
        m = _ROUTE.match(path)
        if not m:
            raise RegistryError("NAME_UNKNOWN", "no such registry endpoint", status=404,
                                detail={"path": path[:300]})
        name = check_name(m.group("name"))
        if m.group("digest") is not None:
            if method in ("GET", "HEAD"):
                return await self._get_blob(req, name, m.group("digest"))
            if method == "DELETE":
                return await self._delete_blob(req, name, m.group("digest"))
            raise _unsupported(method)
        if m.group("ref") is not None:
            ref = m.group("ref")
            if method in ("GET", "HEAD"):
                return await self._get_manifest(req, name, ref)
            if method == "PUT":
                return await self._put_manifest(req, name, ref)
            if method == "DELETE":
                return await self._delete_manifest(req, name, ref)
            raise _unsupported(method)
        if m.group("tags") is not None:
            if method != "GET":
                raise _unsupported(method)
            return await self._tags(req, name)
        if m.group("subject") is not None:
            if method != "GET":
                raise _unsupported(method)
            return await self._referrers(req, name, m.group("subject"))
        upload = m.group("upload")
        if not upload:
            if method != "POST":
                raise _unsupported(method)
            return await self._start_upload(req, name)
        if method == "GET":
            return await self._upload_status(req, name, upload)
        if method == "PATCH":
            return await self._patch_upload(req, name, upload)
        if method == "PUT":
            return await self._finish_upload(req, name, upload)
        if method == "DELETE":
            return await self._cancel_upload(req, name, upload)
        raise _unsupported(method)

    # -- identity -----------------------------------------------------------------------------

    async def _principal(self, req: Request) -> Principal:
        auth = req.headers.get("authorization")
        if access.needs_database(self.reg, auth):
            return await to_thread.run_sync(access.authenticate, self.reg, auth)
        return access.authenticate(self.reg, auth)

    async def _authorize(self, req: Request, name: str, action: Action) -> Principal:
        p = await self._principal(req)
        if p.anonymous:
            await to_thread.run_sync(access.require, self.reg, p, name, action, req.realm)
        else:
            access.require(self.reg, p, name, action, req.realm)
        return p

    async def _upstream(self, name: str) -> UpstreamConfig | None:
        ups = self.reg.cached_upstreams()
        if ups is None:
            ups = await to_thread.run_sync(self.reg.upstreams)
        return upstream_for(ups, name)

    async def _ping(self, req: Request) -> None:
        p = await self._principal(req)
        if p.anonymous:
            raise RegistryError("UNAUTHORIZED", "authentication required",
                                headers={"WWW-Authenticate": access.challenge(req.realm)})
        await req.respond_json(200, {})

    async def _token(self, req: Request) -> None:
        auth = req.headers.get("authorization")
        if req.method == "POST":
            from urllib.parse import parse_qs

            form = parse_qs((await req.read(65536, RegistryError("UNSUPPORTED", "form too large", status=413)))
                            .decode("latin-1"))
            grant = (form.get("grant_type") or [""])[0]
            if grant == "password":
                user = (form.get("username") or [""])[0]
                secret = (form.get("password") or [""])[0]
                auth = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
            elif grant == "refresh_token":
                auth = "Bearer " + (form.get("refresh_token") or [""])[0]
            else:
                await req.respond_json(400, {"error": "unsupported_grant_type"})
                return
        try:
            p = await to_thread.run_sync(access.authenticate, self.reg, auth)
        except RegistryError as err:
            err.headers["WWW-Authenticate"] = 'Basic realm="conveyor"'
            raise
        token = tokens.issue(self.reg.key, p)
        await req.respond_json(200, {
            "token": token,
            "access_token": token,
            "expires_in": tokens.TOKEN_TTL,
            "issued_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        })

    # -- discovery ----------------------------------------------------------------------------

    def _page_size(self, req: Request) -> int | None:
        raw = req.q("n")
        if raw is None or raw == "":
            return None
        if not raw.isdigit():
            raise RegistryError("UNSUPPORTED", "the n parameter must be a non-negative integer",
                                status=400, detail={"n": raw[:50]})
        return min(int(raw), MAX_TAG_PAGE)

    async def _catalog(self, req: Request) -> None:
        p = await self._principal(req)
        n = self._page_size(req)
        last = req.q("last")

        def names() -> list[str]:
            with self.reg.reads() as s:
                everything = manifests.list_repositories(s, None, last)
            return [x for x in everything if access.allowed(self.reg, p, x, Action.PULL)]

        visible = await to_thread.run_sync(names)
        if p.anonymous and not visible:
            raise RegistryError("UNAUTHORIZED", "authentication required", headers={
                "WWW-Authenticate": access.challenge(req.realm) + ',scope="registry:catalog:*"'})
        headers = []
        if n is not None and len(visible) > n:
            visible = visible[:n]
            if visible:
                headers.append(("link", f'</v2/_catalog?n={n}&last={visible[-1]}>; rel="next"'))
        await req.respond_json(200, {"repositories": visible}, headers)

    async def _tags(self, req: Request, name: str) -> None:
        await self._authorize(req, name, Action.PULL)
        n = self._page_size(req)
        last = req.q("last")

        def run() -> list[str]:
            with self.reg.reads() as s:
                return manifests.list_tags(s, name, None if n is None else n + 1, last)

        tags = await to_thread.run_sync(run)
        headers = []
        if n is not None and len(tags) > n:
            tags = tags[:n]
            if tags:
                headers.append(("link", f'</v2/{name}/tags/list?n={n}&last={tags[-1]}>; rel="next"'))
        await req.respond_json(200, {"name": name, "tags": tags}, headers)

    async def _referrers(self, req: Request, name: str, subject: str) -> None:
        await self._authorize(req, name, Action.PULL)
        digest = str(parse_digest(subject))
        artifact_type = req.q("artifactType")

        def run() -> list[dict[str, object]]:
            with self.reg.reads() as s:
                return manifests.referrers(s, name, digest, artifact_type)

        found = await to_thread.run_sync(run)
        headers = [("oci-filters-applied", "artifactType")] if artifact_type else []
        doc = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": found}
        await req.respond_json(200, doc, headers, content_type=mediatypes.OCI_INDEX)

    # -- manifests ----------------------------------------------------------------------------

    async def _get_manifest(self, req: Request, name: str, ref: str) -> None:
        p = await self._authorize(req, name, Action.PULL)
        upstream = await self._upstream(name)
        if upstream is not None:
            found = await self.proxy.manifest(upstream, name, ref, with_content=not req.head,
                                              reveal=p.role == Role.ADMIN)
        else:
            found = await self._read(lookups.manifest, name, ref, not req.head)
        headers = [("docker-content-digest", found.digest)]
        if req.head:
            await req.respond(200, headers, content_type=found.media_type, content_length=found.size)
        else:
            await req.respond(200, headers, found.content or b"", content_type=found.media_type)

    async def _put_manifest(self, req: Request, name: str, ref: str) -> None:
        p = await self._authorize(req, name, Action.PUSH)
        upstream = await self._upstream(name)
        if upstream is not None:
            raise RegistryError("DENIED", f"'{name}' is a pull-through cache of {upstream.url}; push elsewhere")
        too_large = RegistryError(
            "MANIFEST_INVALID", f"manifest exceeds the {mediatypes.MAX_MANIFEST_BYTES} byte limit", status=413)
        body = await req.read(mediatypes.MAX_MANIFEST_BYTES, too_large)
        extra_tags = req.q_all("tag")

        def run() -> manifests.PushResult:
            return in_transaction(self.reg.db, lambda s: manifests.put(
                s, name, ref, body, req.headers.get("content-type"), p.name, extra_tags))

        result = await to_thread.run_sync(run)
        headers = [
            ("location", f"/v2/{name}/manifests/{result.digest}"),
            ("docker-content-digest", result.digest),
        ]
        if result.subject:
            headers.append(("oci-subject", result.subject))
        if extra_tags:
            headers.append(("oci-tag", ",".join(extra_tags)))
        await req.respond(201, headers)

    async def _delete_manifest(self, req: Request, name: str, ref: str) -> None:
        p = await self._authorize(req, name, Action.DELETE)

        def run() -> None:
            in_transaction(self.reg.db, lambda s: manifests.delete_reference(s, name, ref, p.name))

        await to_thread.run_sync(run)
        await req.respond(202)

    # -- blobs --------------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a ``lookups`` function on a plain connection: inline on SQLite, else in a thread."""

        def run() -> T:
            with self.reg.connection() as conn:
                return fn(conn, *args)

        if self.reg.inline_reads:
            return run()
        return await to_thread.run_sync(run)

    async def _get_blob(self, req: Request, name: str, raw_digest: str) -> None:
        p = await self._authorize(req, name, Action.PULL)
        digest = str(parse_digest(raw_digest))
        size = await self._read(lookups.blob_size, name, digest)
        if size is None:
            upstream = await self._upstream(name)
            if upstream is not None:
                size = await self.proxy.blob(req, upstream, name, digest, reveal=p.role == Role.ADMIN)
                if size is not None:
                    await self._send_blob(req, digest, size)
                return
            # Manifests are content too; some clients fetch them through the blob endpoint.
            try:
                found = await to_thread.run_sync(self._manifest_as_blob, name, digest)
            except RegistryError:
                raise blob_unknown(digest) from None
            headers = [*_octet_headers(digest)]
            await req.respond(200, headers, found.content or b"", content_type=found.media_type,
                              content_length=found.size)
            return
        await self._send_blob(req, digest, size)

    def _manifest_as_blob(self, name: str, digest: str) -> manifests.StoredManifest:
        with self.reg.reads() as s:
            return manifests.lookup(s, name, digest, with_content=True)

    async def _send_blob(self, req: Request, digest: str, size: int) -> None:
        path = self.reg.store.path(digest)
        start, end, status = 0, size - 1, 200
        headers = _octet_headers(digest)
        rng = req.headers.get("range")
        if rng is not None:
            m = _RANGE.match(rng.strip())
            if m and (m.group(1) or m.group(2)):
                a, b = m.group(1), m.group(2)
                if a == "":
                    start, end = max(0, size - int(b)), size - 1
                    bad = int(b) == 0
                else:
                    start = int(a)
                    end = min(int(b), size - 1) if b else size - 1
                    bad = start >= size or (b != "" and int(b) < start)
                if bad or size == 0:
                    raise RegistryError("SIZE_INVALID", "requested range not satisfiable", status=416,
                                        headers={"Content-Range": f"bytes */{size}"})
                status = 206
                headers.append(("content-range", f"bytes {start}-{end}/{size}"))
        length = end - start + 1 if size else 0
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            log.error("blob %s is recorded but missing from the store at %s", digest, path)
            raise blob_unknown(digest) from None
        try:
            await req.start(status, [*headers, ("content-type", "application/octet-stream"),
                                     ("content-length", str(length))])
            if req.head:
                await req.write(b"", more=False)
                return
            pos, remaining = start, length
            while remaining > 0:
                data = await to_thread.run_sync(os.pread, fd, min(READ_CHUNK, remaining), pos)
                if not data:
                    raise OSError(f"blob {digest} is shorter than recorded")
                pos += len(data)
                remaining -= len(data)
                await req.write(data, more=remaining > 0)
            if length == 0:
                await req.write(b"", more=False)
        finally:
            os.close(fd)

    async def _delete_blob(self, req: Request, name: str, raw_digest: str) -> None:
        p = await self._authorize(req, name, Action.DELETE)
        digest = str(parse_digest(raw_digest))

        def tx(s: Session) -> bool:
            gone = blobs.unlink(s, name, digest)
            if gone:
                record(s, actor=p.name, action="registry.blob.delete", target=f"{name}@{digest}",
                       payload={"repository": name, "tag": None, "digest": digest, "pusher": p.name})
            return gone

        if not await to_thread.run_sync(in_transaction, self.reg.db, tx):
            raise blob_unknown(digest)
        await req.respond(202)

    # -- uploads ------------------------------------------------------------------------------

    def _upload_headers(self, name: str, upload_id: str, offset: int) -> list[tuple[str, str]]:
        return [
            ("location", f"/v2/{name}/blobs/uploads/{upload_id}"),
            ("range", f"0-{max(offset - 1, 0)}"),
            ("docker-upload-uuid", upload_id),
        ]

    def _range_error(self, name: str, upload_id: str, offset: int, why: str) -> RegistryError:
        return RegistryError(
            "BLOB_UPLOAD_INVALID", why, status=416,
            headers={k: v for k, v in self._upload_headers(name, upload_id, offset)},
        )

    def _content_range(self, req: Request) -> tuple[int, int] | None:
        raw = req.headers.get("content-range")
        if raw is None:
            return None
        m = _CONTENT_RANGE.match(raw.strip())
        if not m or int(m.group(2)) < int(m.group(1)):
            raise RegistryError("BLOB_UPLOAD_INVALID", "malformed Content-Range", status=416,
                                detail={"content-range": raw[:100]})
        return int(m.group(1)), int(m.group(2))

    async def _write_chunk(self, req: Request, name: str, upload_id: str, w: ChunkWriter) -> None:
        """Append the request body to the session, honouring Content-Range (416 when out of order)."""
        rng = self._content_range(req)
        if rng is not None and rng[0] != w.start:
            raise self._range_error(name, upload_id, w.start,
                                    f"chunk starts at {rng[0]} but the upload has {w.start} bytes")

        async def write(data: bytes) -> None:
            await to_thread.run_sync(w.write, data)

        await gather_writes(req.body(), write, WRITE_BATCH)
        if rng is not None and w.written != rng[1] - rng[0] + 1:
            raise self._range_error(name, upload_id, w.start,
                                    f"Content-Range announced {rng[1] - rng[0] + 1} bytes, got {w.written}")

    async def _open(self, name: str, upload_id: str) -> ChunkWriter:
        def run() -> ChunkWriter:
            self.reg.uploads.get(upload_id, name)
            return self.reg.uploads.open_chunk(upload_id)

        return await to_thread.run_sync(run)

    async def _start_upload(self, req: Request, name: str) -> None:
        p = await self._authorize(req, name, Action.PUSH)
        if await self._upstream(name) is not None:
            raise RegistryError("DENIED", f"'{name}' is a pull-through cache; push elsewhere")
        mount = req.q("mount")
        if mount is not None:
            digest = str(parse_digest(mount))
            source = req.q("from")
            if source is not None:
                check_name(source)
                source_ok = await to_thread.run_sync(access.allowed, self.reg, p, source, Action.PULL)
            else:
                source_ok = True
            if source_ok and await to_thread.run_sync(blobs.mount, self.reg, name, p.name, digest, source):
                await req.drain()
                await req.respond(201, [("location", f"/v2/{name}/blobs/{digest}"),
                                        ("docker-content-digest", digest)])
                return
        raw_digest = req.q("digest")
        expected = parse_digest(raw_digest) if raw_digest is not None and mount is None else None
        info = await to_thread.run_sync(self.reg.uploads.create, name, p.name)
        if expected is None:
            await req.drain()
            await req.respond(202, self._upload_headers(name, info.id, 0))
            return
        # Monolithic upload: the whole blob is this request's body.
        try:
            await self._complete(req, name, info.id, p, expected, await self._open(name, info.id))
        except BaseException:
            await to_thread.run_sync(self.reg.uploads.discard, info.id)
            raise

    async def _upload_status(self, req: Request, name: str, upload_id: str) -> None:
        await self._authorize(req, name, Action.PUSH)

        def run() -> int:
            self.reg.uploads.get(upload_id, name)
            return self.reg.uploads.size(upload_id)

        offset = await to_thread.run_sync(run)
        await req.respond(204, self._upload_headers(name, upload_id, offset))

    async def _patch_upload(self, req: Request, name: str, upload_id: str) -> None:
        await self._authorize(req, name, Action.PUSH)
        w = await self._open(name, upload_id)
        try:
            await self._write_chunk(req, name, upload_id, w)
            offset = await to_thread.run_sync(w.commit)
        finally:
            await to_thread.run_sync(w.abort)
        await req.respond(202, self._upload_headers(name, upload_id, offset))

    async def _finish_upload(self, req: Request, name: str, upload_id: str) -> None:
        p = await self._authorize(req, name, Action.PUSH)
        raw_digest = req.q("digest")
        if not raw_digest:
            raise RegistryError("DIGEST_INVALID", "the digest parameter is required to complete an upload")
        expected = parse_digest(raw_digest)
        await self._complete(req, name, upload_id, p, expected, await self._open(name, upload_id))

    async def _complete(
        self, req: Request, name: str, upload_id: str, p: Principal, expected: Digest, w: ChunkWriter
    ) -> None:
        digest = str(expected)
        try:
            await self._write_chunk(req, name, upload_id, w)
            size = await to_thread.run_sync(w.finish, expected)
            src = self.reg.uploads.data_path(upload_id)
            await to_thread.run_sync(
                blobs.commit_blob, self.reg, name, p.name, digest, size, blobs.publish_file(self.reg, src, digest))
        except BaseException:
            await to_thread.run_sync(w.abort)
            raise
        await to_thread.run_sync(w.close)
        await to_thread.run_sync(self.reg.uploads.discard, upload_id)
        await req.respond(201, [("location", f"/v2/{name}/blobs/{digest}"), ("docker-content-digest", digest)])

    async def _cancel_upload(self, req: Request, name: str, upload_id: str) -> None:
        await self._authorize(req, name, Action.PUSH)

        def run() -> None:
            self.reg.uploads.get(upload_id, name)
            self.reg.uploads.discard(upload_id)

        await to_thread.run_sync(run)
        await req.respond(204)


class RegistryDispatch:
    """ASGI middleware sending ``/v2`` straight to the registry, past the REST API's router and
    middleware stack (which would cost more than many registry requests themselves)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Any], registry: Registry) -> None:
        self.app = app
        self.registry_app = RegistryApp(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/v2" or path.startswith("/v2/"):
                await self.registry_app(scope, receive, send)
                return
        await self.app(scope, receive, send)

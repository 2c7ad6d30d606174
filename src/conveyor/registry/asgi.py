"""Small ASGI plumbing for the registry: a request wrapper that streams bodies and responses."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from conveyor.registry.errors import RegistryError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


def full_path(scope: Scope) -> str:
    """The request path including the mount prefix, whichever way the server reports it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and not path.startswith(root):
        path = root + path
    return path


class Request:
    def __init__(self, scope: Scope, receive: Receive, send: Send, public_url: str | None) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.method: str = scope["method"]
        self.path = full_path(scope)
        self.query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            key, val = k.decode("latin-1").lower(), v.decode("latin-1")
            headers[key] = f"{headers[key]},{val}" if key in headers else val
        self.headers = headers
        self.started = False
        self.body_done = False
        if public_url:
            self.base_url = public_url.rstrip("/")
        else:
            scheme = headers.get("x-forwarded-proto") or scope.get("scheme", "http")
            host = headers.get("host")
            if not host:
                server = scope.get("server") or ("127.0.0.1", 80)
                host = f"{server[0]}:{server[1]}"
            self.base_url = f"{scheme}://{host}"

    @property
    def head(self) -> bool:
        return self.method == "HEAD"

    def q(self, key: str) -> str | None:
        values = self.query.get(key)
        return values[0] if values else None

    def q_all(self, key: str) -> list[str]:
        return self.query.get(key, [])

    @property
    def realm(self) -> str:
        return f"{self.base_url}/v2/token"

    async def body(self) -> AsyncIterator[bytes]:
        while not self.body_done:
            msg = await self._receive()
            if msg["type"] == "http.disconnect":
                raise ClientGone()
            chunk = msg.get("body", b"")
            if not msg.get("more_body", False):
                self.body_done = True
            if chunk:
                yield chunk

    async def read(self, limit: int, too_large: RegistryError) -> bytes:
        declared = self.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large
        parts: list[bytes] = []
        size = 0
        async for chunk in self.body():
            size += len(chunk)
            if size > limit:
                raise too_large
            parts.append(chunk)
        return b"".join(parts)

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        raw = [API_VERSION] + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, data: bytes, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(
        self,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        content_length: int | None = None,
    ) -> None:
        hs = list(headers or [])
        if content_type:
            hs.append(("content-type", content_type))
        hs.append(("content-length", str(len(body) if content_length is None else content_length)))
        await self.start(status, hs)
        await self.write(b"" if self.head else body, more=False)

    async def respond_json(self, status: int, doc: Any, headers: list[tuple[str, str]] | None = None,
                           content_type: str = "application/json") -> None:
        await self.respond(status, headers, json.dumps(doc).encode(), content_type=content_type)

    async def fail(self, err: RegistryError) -> None:
        body = err.body()
        headers = [(k, v) for k, v in err.headers.items()]
        await self.respond(err.status, headers, body, content_type="application/json")

    async def drain(self) -> None:
        """Read and drop the rest of the request body (so the connection can be reused)."""
        try:
            async for _ in self.body():
                pass
        except ClientGone:
            pass


async def gather_writes(
    chunks: AsyncIterator[bytes], write: Callable[[bytes], Awaitable[None]], batch: int
) -> None:
    """Feed ``chunks`` to ``write`` in batches of about ``batch`` bytes, receiving the next batch
    while the previous one is being written."""
    pending: asyncio.Task[None] | None = None
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= batch:
                data = b"".join(parts)
                parts, size = [], 0
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(write(data))
        if pending is not None:
            await pending
            pending = None
        if parts:
            await write(b"".join(parts))
    finally:
        if pending is not None:
            # Never leave a write running behind the caller's back (it is about to truncate).
            with contextlib.suppress(Exception):  # the error already propagating is the one to report
                await pending

"""Security headers on every response of the app: dashboard, API, git and the registry.

Before (issue 13) there was none, so the dashboard's approve and merge buttons could be framed
by another site and clickjacked, and a response could be sniffed into another content type.

- ``Content-Security-Policy``: scripts, styles, images and connections from this origin only,
  no inline script or style (the dashboard's only script is ``/ui/static/app.js``), no plugins,
  forms post only here, and ``frame-ancestors 'none'``;
- ``X-Frame-Options: DENY`` for browsers without CSP level 2;
- ``X-Content-Type-Options: nosniff``; ``Referrer-Policy: same-origin``.

A response that sets its own ``Content-Security-Policy`` keeps it (the OpenAPI page does: it
loads Swagger UI and runs one inline script, allowed by its hash). None of these headers
changes what git, podman or skopeo do with a response, so /git and /v2 get them too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class SecurityHeaders:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in HEADERS if k not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)

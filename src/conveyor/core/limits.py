"""Input limits for the REST API and the dashboard: field types for schemas, and a request guard.

Measured before (issue 13): NUL bytes in a ref, integers beyond 64 bits in a path, deeply nested
JSON and lone UTF-16 surrogates in JSON strings each gave a 500 (PostgreSQL refuses NUL in text,
SQLite and psycopg overflow on big integers, ``json`` recurses, UTF-8 encoding of a lone
surrogate fails on the way into the database); PR bodies of 10 MB were accepted and listed back
whole. The rules below turn each of those into a 4xx problem detail naming the rule.

``RequestGuard`` runs before routing, for every path except the OCI registry (``/v2``, which has
its own limits: manifests 4 MB, names and digests by the spec's grammars) and git (``/git``,
whose bodies are packfiles streamed to git):

- the path and query string carry no NUL and no digits-only value beyond 64 bits;
- request bodies are at most ``MAX_BODY_BYTES``, checked on Content-Length and while reading
  (a chunked body is cut off as soon as it passes the limit, never buffered whole);
- a JSON body is UTF-8, nested at most ``MAX_JSON_DEPTH`` levels, has no NUL and no lone
  surrogate in any string or key, and no integer outside the signed 64-bit range;
- a form body has no NUL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from pydantic import Field

from conveyor.core.errors import ConveyorError, InvalidInput

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
INT64 = (-(2**63), 2**63 - 1)

# Text fields of the API's schemas. "No NUL": PostgreSQL cannot store it in text columns.
_NO_NUL = r"^[^\x00]*$"
NameText = Annotated[str, Field(max_length=255, pattern=_NO_NUL)]
TitleText = Annotated[str, Field(max_length=300, pattern=_NO_NUL)]
ShortText = Annotated[str, Field(max_length=1000, pattern=_NO_NUL)]
BodyText = Annotated[str, Field(max_length=65536, pattern=_NO_NUL)]
UrlText = Annotated[str, Field(max_length=2000, pattern=_NO_NUL)]
SecretText = Annotated[str, Field(max_length=255, pattern=_NO_NUL)]
Int64 = Annotated[int, Field(ge=INT64[0], le=INT64[1])]
# A list in a PR listing shows this much of each body; the PR itself shows all of it.
LIST_BODY_CHARS = 1000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGITS = re.compile(rb"^[+-]?\d{19,}$")
_UNGUARDED = ("/v2/", "/git/")


class PayloadTooLarge(ConveyorError):
    status = 413
    title = "Payload too large"


def check_int(text: str) -> int:
    """``json.loads(parse_int=...)``: integers within the signed 64-bit range or InvalidInput."""
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise InvalidInput(f"integer {text[:30]}{'...' if len(text) > 30 else ''} is outside the 64-bit range",
                           rule="request.integer-range")
    return value


def _check_text(s: str, where: str) -> None:
    if "\x00" in s:
        raise InvalidInput(f"{where} contains a NUL character", rule="request.nul")
    if _SURROGATE.search(s):
        raise InvalidInput(f"{where} contains a lone UTF-16 surrogate (not valid Unicode text)",
                           rule="request.surrogate")


def check_json(data: Any) -> None:
    """Depth, NUL and surrogates of an already parsed document (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, "a string")
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise InvalidInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", rule="request.json-depth")
            if isinstance(value, dict):
                for k, v in value.items():
                    _check_text(k, "a key")
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in value)


def parse_json(body: bytes) -> Any:
    """A JSON body checked by the rules above; InvalidInput names the broken rule."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the body is not UTF-8 (byte {exc.start})", rule="request.encoding") from None
    try:
        data = json.loads(text, parse_int=check_int)
    except RecursionError:
        raise InvalidInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", rule="request.json-depth") from None
    except ValueError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", rule="request.json") from None
    check_json(data)
    return data


def check_target(path: str, raw_query: bytes) -> None:
    """No NUL and no integer beyond 64 bits in the path or the query string."""
    segments = [s.encode("utf-8", "surrogateescape") for s in path.split("/")]
    values = [unquote_to_bytes(v.partition(b"=")[2]) for v in raw_query.split(b"&")] if raw_query else []
    keys = [unquote_to_bytes(v.partition(b"=")[0]) for v in raw_query.split(b"&")] if raw_query else []
    for part in (*segments, *values, *keys):
        if b"\x00" in part:
            raise InvalidInput("the request path or query contains a NUL byte", rule="request.nul")
        if _DIGITS.match(part) and not INT64[0] <= int(part) <= INT64[1]:
            raise InvalidInput("a number in the path or query is outside the 64-bit range",
                               rule="request.integer-range")


class RequestGuard:
    """ASGI middleware applying the module's rules before any route sees the request."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 problem: Callable[[ConveyorError], Any], max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.problem = problem
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_UNGUARDED) or scope["path"] in ("/v2", "/git"):
            await self.app(scope, receive, send)
            return
        try:
            check_target(scope["path"], scope.get("query_string", b""))
            if scope["method"] in ("GET", "HEAD", "OPTIONS") or not _checked_type(scope):
                await self.app(scope, receive, send)  # binary uploads stream on to routes with limits of their own
                return
            body = await self._read(scope, receive)
            self._check_body(scope, body)
        except ConveyorError as exc:
            await self.problem(exc)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        too_large = PayloadTooLarge(f"request bodies are limited to {self.max_body} bytes", rule="request.size")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise too_large
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    def _check_body(scope: Scope, body: bytes) -> None:
        ctype = _content_type(scope)
        json_body = ctype in (b"", b"application/json") or ctype.endswith(b"+json")  # FastAPI reads no type as JSON
        if json_body and body.strip():
            parse_json(body)
        elif ctype == b"application/x-www-form-urlencoded" and (b"%00" in body or b"\x00" in body):
            raise InvalidInput("the form contains a NUL byte", rule="request.nul")


def _content_type(scope: Scope) -> bytes:
    return bytes(dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower())


def _checked_type(scope: Scope) -> bool:
    """Bodies the guard reads and checks: JSON (declared, or undeclared as FastAPI reads it) and forms."""
    ctype = _content_type(scope)
    return (ctype in (b"", b"application/json", b"application/x-www-form-urlencoded", b"multipart/form-data")
            or ctype.endswith(b"+json"))


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # the disconnect, when the client goes

    return again

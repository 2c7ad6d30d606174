"""HTTP glue shared by every component: app state, sessions, the caller's identity, problem details."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from conveyor.core.auth import ANONYMOUS, NOBODY, Principal
from conveyor.core.config import Settings
from conveyor.core.db import Database
from conveyor.core.errors import ConveyorError, InvalidInput, Unauthorized
from conveyor.core.identities import authenticate_basic, authenticate_token

PROBLEM_JSON = "application/problem+json"


@dataclass
class AppState:
    settings: Settings
    db: Database


def state_of(request: Request) -> AppState:
    st: AppState = request.app.state.conveyor
    return st


def get_session(request: Request) -> Iterator[Session]:
    """The request's unit of work. Used with ``scope="function"`` (below): FastAPI's default for a
    dependency with yield runs its exit after the response has been sent, so a client could get its
    201 before the commit (a PR just created answered 404 on PostgreSQL), and a failing commit would
    leave a 2xx for work that was lost. Committed before the response, an error becomes the answer."""
    with state_of(request).db.session() as s:
        yield s


def principal_from_header(session: Session, authorization: str | None, anonymous_read: bool) -> Principal:
    if not authorization:
        return ANONYMOUS if anonymous_read else NOBODY
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value:
        return authenticate_token(session, value.strip())
    if scheme == "basic" and value:
        try:
            user, _, secret = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise Unauthorized("malformed basic credentials", rule="auth.malformed") from None
        return authenticate_basic(session, user, secret)
    raise Unauthorized("unsupported Authorization scheme; use Bearer or Basic", rule="auth.scheme")


def principal_from_header_readonly(db: Database, authorization: str | None, anonymous_read: bool) -> Principal:
    """``principal_from_header`` without taking SQLite's write lock, for hot paths (git).

    Authentication only writes when a token's ``last_used_at`` is due (once a minute per token);
    then, and only then, the lookup is repeated in a writing unit of work."""
    with db.reads() as s, s.no_autoflush:
        principal = principal_from_header(s, authorization, anonymous_read)
        if not (s.dirty or s.new or s.deleted):
            return principal
    with db.session() as s:
        return principal_from_header(s, authorization, anonymous_read)


def get_principal(request: Request) -> Principal:
    # A short transaction of its own: the request's session (if any) must not be held open
    # by authentication, or an endpoint that runs its own units of work would wait on it.
    st = state_of(request)
    with st.db.session() as s:
        return principal_from_header(s, request.headers.get("authorization"), st.settings.anonymous_read)


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def problem_response(exc: ConveyorError) -> JSONResponse:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="conveyor"'
    return JSONResponse(exc.problem(), status_code=exc.status, media_type=PROBLEM_JSON, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ConveyorError)
    async def _conveyor_error(_: Request, exc: ConveyorError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(DataError)
    async def _data_error(_: Request, exc: DataError) -> JSONResponse:
        # The database refused a value from the request that passed every earlier check: an id
        # beyond a 32-bit column on PostgreSQL (core/limits.py stops 64-bit overflows earlier).
        # The unit of work has been rolled back, so nothing is half-written.
        return problem_response(InvalidInput("a value in the request is out of range for this field",
                                             rule="request.value-range"))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = list(err.get("loc", ()))
            loc = ".".join(str(x) for x in (where[1:] if where[:1] == ["body"] else where))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        body = {
            "type": "about:blank",
            "title": "Invalid input",
            "status": 422,
            "detail": "; ".join(parts) or "invalid request",
            "rule": "request.schema",
        }
        return JSONResponse(body, status_code=422, media_type=PROBLEM_JSON)

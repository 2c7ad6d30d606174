"""Sign-in with an API token, a signed session cookie, and a CSRF token per session."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from conveyor.core import Kind, Principal, Unauthorized, state_of, utcnow
from conveyor.core.identities import (
    authenticate_token,
    get_user,
    new_token,
    principal_of,
    revoke_token,
    token_problem,
    token_row,
)
from conveyor.core.settings_store import shared_secret

COOKIE = "conveyor_session"
MAX_AGE = 12 * 3600
KEY_NAME = "web.session-key"


class LoginRequired(Exception):
    """Raised by page handlers; answered with a redirect to the login form."""


class CsrfRefused(Exception):
    pass


@dataclass(frozen=True)
class WebSession:
    principal: Principal
    csrf: str
    session_token_id: int


_serializers: dict[str, URLSafeTimedSerializer] = {}


def serializer(request: Request) -> URLSafeTimedSerializer:
    # The key is shared through the database, so every server of the installation agrees.
    st = state_of(request)
    if st.db.url not in _serializers:
        _serializers[st.db.url] = URLSafeTimedSerializer(shared_secret(st.db, KEY_NAME), salt="conveyor-web-session")
    return _serializers[st.db.url]


def sign_in(request: Request, token: str) -> tuple[Principal, str]:
    """Check the token, open a session for it and return the principal and the cookie value.

    A session is a token row of its own (revoked at sign-out, expiring with the cookie) bound to the
    token used to sign in: the cookie names both rows, never a token, and either one revoked, expired
    or its user disabled ends the session.
    """
    st = state_of(request)
    ser = serializer(request)  # before the session: creating the key on first use is a write of its own
    with st.db.session() as s:
        principal = authenticate_token(s, token.strip())
        if principal.scope is not None or principal.kind != Kind.PERSON:
            raise Unauthorized("only people sign in to the dashboard", rule="auth.person-only")
        user = get_user(s, principal.name)
        session_row, _ = new_token(s, user, "dashboard session", expires_at=utcnow() + timedelta(seconds=MAX_AGE))
        value = ser.dumps({"tid": principal.token_id, "sid": session_row.id,
                                           "csrf": secrets.token_urlsafe(24)})
    return principal, value


def current(request: Request) -> WebSession | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    st = state_of(request)
    try:
        data = serializer(request).loads(raw, max_age=MAX_AGE)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) for k in ("tid", "sid")) \
            or not isinstance(data.get("csrf"), str):
        return None
    with st.db.session() as s:
        login, session_row = token_row(s, data["tid"]), token_row(s, data["sid"])
        if token_problem(login) is not None or token_problem(session_row) is not None or login is None:
            return None
        if session_row is None or session_row.user_id != login.user_id:
            return None
        principal = principal_of(login)
    return WebSession(principal, data["csrf"], data["sid"])


def sign_out(request: Request, ws: WebSession) -> None:
    with state_of(request).db.session() as s:
        row = token_row(s, ws.session_token_id)
        if row is not None:
            revoke_token(s, row, ws.principal.name)


def require(request: Request) -> WebSession:
    ws = current(request)
    if ws is None:
        raise LoginRequired()
    return ws


async def form_fields(request: Request) -> dict[str, str]:
    """A POST's form fields. Only this part of a form route is async (reading the body); the route
    itself is a plain ``def``, so its database work runs in a worker thread (rule db.off-event-loop)."""
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


FormFields = Annotated[dict[str, str], Depends(form_fields)]


def require_post(request: Request, fields: dict[str, str]) -> WebSession:
    """A signed-in POST whose form carries this session's CSRF token."""
    ws = require(request)
    if not hmac.compare_digest(fields.get("csrf", ""), ws.csrf):
        raise CsrfRefused()
    return ws


def check_token_shape(token: str) -> None:
    if not token.strip():
        raise Unauthorized("enter an API token", rule="auth.token-required")

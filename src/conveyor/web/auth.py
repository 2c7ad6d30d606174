"""Sign-in with an API token, a signed session cookie, and a CSRF token per session."""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from conveyor.core import Principal, Role, Settings, Unauthorized, state_of
from conveyor.core.auth import authenticate_token, hash_token
from conveyor.core.models import ApiToken

COOKIE = "conveyor_session"
MAX_AGE = 12 * 3600
KEY_FILE = "web-session.key"


class LoginRequired(Exception):
    """Raised by page handlers; answered with a redirect to the login form."""


class CsrfRefused(Exception):
    pass


@dataclass(frozen=True)
class WebSession:
    principal: Principal
    csrf: str


def _secret_key(settings: Settings) -> bytes:
    # Per data dir, so sessions survive restarts and every server on the same data agrees.
    path = Path(settings.data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


_serializers: dict[Path, URLSafeTimedSerializer] = {}


def serializer(settings: Settings) -> URLSafeTimedSerializer:
    key = Path(settings.data_dir)
    if key not in _serializers:
        try:
            secret = _secret_key(settings)
        except FileExistsError:  # another worker created it between the check and the open
            secret = (key / KEY_FILE).read_text().strip().encode()
        _serializers[key] = URLSafeTimedSerializer(secret, salt="conveyor-web-session")
    return _serializers[key]


def sign_in(request: Request, token: str) -> tuple[Principal, str]:
    """Check the token and return the principal and the cookie value for its session."""
    st = state_of(request)
    with st.db.session() as s:
        principal = authenticate_token(s, token.strip())
        row = s.execute(select(ApiToken).where(ApiToken.token_hash == hash_token(token.strip()))).scalar_one()
        # The cookie names the token row, never the token itself, so revoking the token ends the session.
        value = serializer(st.settings).dumps({"tid": row.id, "csrf": secrets.token_urlsafe(24)})
    return principal, value


def current(request: Request) -> WebSession | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    st = state_of(request)
    try:
        data = serializer(st.settings).loads(raw, max_age=MAX_AGE)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("tid"), int) or not isinstance(data.get("csrf"), str):
        return None
    with st.db.session() as s:
        row = s.get(ApiToken, data["tid"])
        if row is None or row.user.disabled:
            return None
        principal = Principal(name=row.user.name, role=Role(row.user.role), user_id=row.user.id)
    return WebSession(principal, data["csrf"])


def require(request: Request) -> WebSession:
    ws = current(request)
    if ws is None:
        raise LoginRequired()
    return ws


async def require_post(request: Request) -> tuple[WebSession, dict[str, str]]:
    """A signed-in POST whose form carries this session's CSRF token."""
    ws = require(request)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not hmac.compare_digest(fields.get("csrf", ""), ws.csrf):
        raise CsrfRefused()
    return ws, fields


def check_token_shape(token: str) -> None:
    if not token.strip():
        raise Unauthorized("enter an API token", rule="auth.token-required")

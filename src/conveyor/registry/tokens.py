"""Registry bearer tokens for the Docker token flow (``WWW-Authenticate: Bearer realm=...``).

A client trades its credentials (user + API token or password) at ``/v2/token`` for a
short-lived token. The token is an HMAC-signed statement of who the caller is (user, role, the
API token it was traded for and that token's narrowing), so checking its signature costs no
database round trip; authorisation is still decided per request from the caller's role or scope
and the repository. Revoking the API token (or disabling the user) also ends the registry tokens
issued for it: ``Registry.still_valid`` checks, cached for two seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from sqlalchemy.orm import Session

from conveyor.core import Kind, Principal, Role, Scope
from conveyor.registry.models import RegistrySetting

TOKEN_PREFIX = "cvr_"
TOKEN_TTL = 300
_KEY_NAME = "token_signing_key"


def load_or_create_key(session: Session) -> bytes:
    row = session.get(RegistrySetting, _KEY_NAME)
    if row is None:
        row = RegistrySetting(key=_KEY_NAME, value=secrets.token_hex(32))
        session.add(row)
        session.flush()
    return bytes.fromhex(row.value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: bytes, principal: Principal, ttl: int = TOKEN_TTL, now: float | None = None) -> str:
    claims = {
        "sub": principal.name,
        "uid": principal.user_id,
        "role": principal.role.value if principal.role else None,
        "kind": principal.kind.value,
        "tid": principal.token_id,
        "scope": principal.scope.to_json() if principal.scope is not None else None,
        "exp": int((now or time.time()) + ttl),
    }
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{TOKEN_PREFIX}{body}.{sig}"


def verify(key: bytes, token: str, now: float | None = None) -> Principal | None:
    """The principal a valid, unexpired token names; None for anything else."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    body, _, sig = token[len(TOKEN_PREFIX):].partition(".")
    want = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not sig or not hmac.compare_digest(sig, want):
        return None
    try:
        claims = json.loads(_unb64(body))
        if float(claims["exp"]) < (now or time.time()):
            return None
        role = Role(claims["role"]) if claims.get("role") else None
        uid, tid = claims.get("uid"), claims.get("tid")
        scope = Scope.from_json(claims["scope"]) if claims.get("scope") else None
        return Principal(name=str(claims["sub"]), role=role, user_id=int(uid) if uid is not None else None,
                         kind=Kind(claims.get("kind") or "person"), token_id=int(tid) if tid is not None else None,
                         scope=scope)
    except (ValueError, KeyError, TypeError):
        return None

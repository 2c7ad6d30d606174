"""Users and tokens in the database: create, authenticate, narrow, revoke, disable, change roles.

Revocation takes effect at once: every request authenticates against the token's row (revoked,
expired, user disabled). Components that cache principals for speed (the registry, whose pulls
must not pay a database round trip each) call ``auth_epoch()`` and drop their cache when it
moved; it moves after every committed revocation, disabling or role change in this process, and
``CACHE_SECONDS`` bounds how long another server's change can go unseen.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core.auth import (
    RESERVED_PREFIXES,
    TOKEN_PREFIX,
    Kind,
    Principal,
    Role,
    Scope,
    hash_password,
    hash_token,
    parse_role,
    verify_password,
)
from conveyor.core.db import after_commit, utcnow
from conveyor.core.errors import Conflict, InvalidInput, NotFound, Unauthorized
from conveyor.core.models import ApiToken, User
from conveyor.core.names import validate_user_name

CACHE_SECONDS = 2.0
_epoch = 0
_epoch_lock = threading.Lock()


def auth_epoch() -> int:
    return _epoch


def _bump_epoch() -> None:
    global _epoch
    with _epoch_lock:
        _epoch += 1


def _auth_changed(session: Session) -> None:
    after_commit(session, _bump_epoch)


def check_reserved(name: str, kind: Kind) -> None:
    for k, prefix in RESERVED_PREFIXES.items():
        if name.startswith(prefix) and k != kind:
            raise InvalidInput(f"user names starting with '{prefix}' are reserved for Conveyor's {k.value} identities",
                               rule="user.reserved-name")
    if kind != Kind.PERSON and not name.startswith(RESERVED_PREFIXES[kind]):
        raise InvalidInput(f"{kind.value} identities are named '{RESERVED_PREFIXES[kind]}...'", rule="user.kind-name")


def _find(session: Session, name: str) -> User | None:
    return session.execute(select(User).where(User.name == name)).scalar_one_or_none()


def create_user(session: Session, name: str, role: str, password: str | None = None,
                kind: Kind = Kind.PERSON) -> tuple[User, str]:
    validate_user_name(name)
    check_reserved(name, kind)
    r = parse_role(role)
    if _find(session, name) is not None:
        raise Conflict(f"user '{name}' already exists", rule="user.unique-name")
    user = User(name=name, role=r.value, kind=kind.value, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    return user, issue_token(session, user, "created with user", scope=default_scope(user))


def ensure_identity(session: Session, name: str, kind: Kind, role: Role = Role.DEVELOPER) -> User:
    """A service, agent or runner identity, created on first use (idempotent)."""
    user = _find(session, name)
    if user is None:
        validate_user_name(name)
        check_reserved(name, kind)
        user = User(name=name, role=role.value, kind=kind.value)
        session.add(user)
        session.flush()
    elif user.kind != kind.value:
        raise Conflict(f"'{name}' exists and is a {user.kind}, not a {kind.value}", rule="user.kind")
    return user


def default_scope(user: User) -> Scope | None:
    """Agents and runners only ever hold narrowed tokens, whoever issues them."""
    if user.kind == Kind.AGENT:
        return Scope(repo_kinds=("gitops",), cluster=user.name.removeprefix(RESERVED_PREFIXES[Kind.AGENT]))
    if user.kind == Kind.RUNNER:
        return Scope(runner=user.name.removeprefix(RESERVED_PREFIXES[Kind.RUNNER]))
    return None


def new_token(session: Session, user: User, description: str = "", *, scope: Scope | None = None,
              expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token row and the token itself (shown once: only its hash is stored)."""
    if scope is None:
        scope = default_scope(user)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:12], description=description[:200],
                   scope=scope.to_json() if scope is not None else None, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, token


def issue_token(session: Session, user: User, description: str = "", *, scope: Scope | None = None,
                expires_at: datetime | None = None) -> str:
    return new_token(session, user, description, scope=scope, expires_at=expires_at)[1]


def principal_of(row: ApiToken) -> Principal:
    user = row.user
    scope = Scope.from_json(row.scope) if row.scope is not None else None
    return Principal(name=user.name, role=Role(user.role), user_id=user.id, kind=Kind(user.kind), token_id=row.id,
                     scope=scope)


def token_problem(row: ApiToken | None) -> str | None:
    """Why a token no longer works, or None when it does."""
    if row is None:
        return "invalid or revoked API token"
    if row.revoked_at is not None:
        return "this token was revoked"
    if row.expires_at is not None and row.expires_at <= utcnow():
        return "this token has expired"
    if row.user.disabled:
        return f"user '{row.user.name}' is disabled"
    return None


def authenticate_token(session: Session, token: str) -> Principal:
    row = session.execute(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).scalar_one_or_none()
    problem = token_problem(row)
    if problem is not None or row is None:
        raise Unauthorized(problem or "invalid or revoked API token", rule="auth.token-invalid")
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
    return principal_of(row)


def token_row(session: Session, token_id: int) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def user_active(session: Session, user_id: int) -> bool:
    """Whether the user still exists and is not disabled (for caches of credentials checked earlier)."""
    user = session.get(User, user_id)
    return user is not None and not user.disabled


def authenticate_basic(session: Session, username: str, secret: str) -> Principal:
    """Basic auth: the secret is an API token (git, podman) or the user's password."""
    if secret.startswith(TOKEN_PREFIX):
        p = authenticate_token(session, secret)
        if username and username != p.name and username not in ("token", "x-access-token", "oauth2"):
            raise Unauthorized("the token does not belong to this user name", rule="auth.token-user")
        return p
    user = _find(session, username)
    if user is None or user.disabled or not user.password_hash or not verify_password(user.password_hash, secret):
        raise Unauthorized("invalid user name or password", rule="auth.password-invalid")
    if user.kind != Kind.PERSON:
        raise Unauthorized("only people sign in with a password", rule="auth.password-invalid")
    return Principal(name=user.name, role=Role(user.role), user_id=user.id)


def get_user(session: Session, name: str) -> User:
    user = _find(session, name)
    if user is None:
        raise NotFound(f"no user named '{name}'", rule="user.exists")
    return user


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(session.execute(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)).scalars())


def find_token(session: Session, user: User, ident: str) -> ApiToken:
    """A token of ``user`` by id or by its prefix (``cvy_AbCd...``, as listed)."""
    rows = [t for t in list_tokens(session, user) if str(t.id) == ident or (len(ident) >= 8 and
                                                                             t.prefix.startswith(ident[:12]))]
    if len(rows) != 1:
        what = "no" if not rows else "more than one"
        raise NotFound(f"{what} token of '{user.name}' matches '{ident}'", rule="token.exists")
    return rows[0]


def revoke_token(session: Session, row: ApiToken, actor: str) -> None:
    if row.revoked_at is None:
        row.revoked_at, row.revoked_by = utcnow(), actor
        _auth_changed(session)


def revoke_scoped(session: Session, **match: Any) -> int:
    """Revoke every live narrowed token whose scope has these values (e.g. ``run_id=42``)."""
    n = 0
    for row in session.execute(select(ApiToken).where(ApiToken.revoked_at.is_(None),
                                                      ApiToken.scope.is_not(None))).scalars():
        if all((row.scope or {}).get(k) == v for k, v in match.items()):
            revoke_token(session, row, "system")
            n += 1
    return n


def set_disabled(session: Session, user: User, disabled: bool) -> None:
    user.disabled = disabled
    _auth_changed(session)


def set_role(session: Session, user: User, role: str) -> None:
    user.role = parse_role(role).value
    _auth_changed(session)

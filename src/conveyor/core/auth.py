"""Users, roles and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core.db import utcnow
from conveyor.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from conveyor.core.models import ApiToken, User
from conveyor.core.names import validate_user_name


class Role(StrEnum):
    DEVELOPER = "developer"
    REVIEWER = "reviewer"
    CLUSTER_ADMIN = "cluster-admin"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"
    WRITE = "write"  # push, open PRs, review, post statuses
    CREATE_REPO = "create-repo"
    MANAGE_REPO = "manage-repo"  # protection rules, webhooks
    DELETE_REPO = "delete-repo"
    MANAGE_USERS = "manage-users"


_BASE = {Permission.READ, Permission.WRITE, Permission.CREATE_REPO}
ROLE_PERMISSIONS: dict[Role, set[Permission]] = {
    Role.DEVELOPER: set(_BASE),
    Role.REVIEWER: set(_BASE),
    Role.CLUSTER_ADMIN: _BASE | {Permission.MANAGE_REPO},
    Role.ADMIN: set(Permission),
}

TOKEN_PREFIX = "cvy_"
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    """Who is making a request. ``user_id`` is None for anonymous readers."""

    name: str
    role: Role | None
    user_id: int | None = None
    may_read: bool = True

    @property
    def anonymous(self) -> bool:
        return self.user_id is None

    def can(self, perm: Permission) -> bool:
        if self.role is None:
            return perm == Permission.READ
        return perm in ROLE_PERMISSIONS[self.role]

    def require(self, perm: Permission) -> None:
        if self.anonymous and (perm != Permission.READ or not self.may_read):
            raise Unauthorized("this operation needs an API token", rule="auth.token-required")
        if not self.can(perm):
            raise Forbidden(
                f"role '{self.role}' of user '{self.name}' does not allow '{perm}'",
                rule=f"role.{perm}",
            )


ANONYMOUS = Principal(name="anonymous", role=None)
NOBODY = Principal(name="anonymous", role=None, may_read=False)


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"unknown role '{value}'; expected one of: {', '.join(r.value for r in Role)}",
            rule="user.role",
        ) from None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except VerificationError:
        return False


def issue_token(session: Session, user: User, description: str = "") -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:10], description=description)
    )
    return token


def create_user(session: Session, name: str, role: str, password: str | None = None) -> tuple[User, str]:
    validate_user_name(name)
    r = parse_role(role)
    if session.execute(select(User).where(User.name == name)).scalar_one_or_none():
        raise Conflict(f"user '{name}' already exists", rule="user.unique-name")
    user = User(name=name, role=r.value, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    return user, issue_token(session, user, "created with user")


def authenticate_token(session: Session, token: str) -> Principal:
    row = session.execute(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token))
    ).scalar_one_or_none()
    if row is None or row.user.disabled:
        raise Unauthorized("invalid or revoked API token", rule="auth.token-invalid")
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
    return Principal(name=row.user.name, role=Role(row.user.role), user_id=row.user.id)


def authenticate_basic(session: Session, username: str, secret: str) -> Principal:
    """Basic auth: the secret is an API token (git, podman) or the user's password."""
    if secret.startswith(TOKEN_PREFIX):
        p = authenticate_token(session, secret)
        if username and username != p.name and username not in ("token", "x-access-token", "oauth2"):
            raise Unauthorized("the token does not belong to this user name", rule="auth.token-user")
        return p
    user = session.execute(select(User).where(User.name == username)).scalar_one_or_none()
    if user is None or user.disabled or not user.password_hash or not verify_password(user.password_hash, secret):
        raise Unauthorized("invalid user name or password", rule="auth.password-invalid")
    return Principal(name=user.name, role=Role(user.role), user_id=user.id)


def get_user(session: Session, name: str) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user named '{name}'")
    return user

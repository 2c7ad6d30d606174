"""Core REST routes: who am I, users (create, list, change role, disable), tokens (issue, list,
revoke), the audit log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from conveyor.core.auth import Kind, Permission, Principal
from conveyor.core.db import utcnow
from conveyor.core.errors import Forbidden, InvalidInput, Unauthorized
from conveyor.core.events import record
from conveyor.core.http import PrincipalDep, SessionDep
from conveyor.core.identities import (
    create_user,
    find_token,
    get_user,
    list_tokens,
    new_token,
    revoke_token,
    set_disabled,
    set_role,
)
from conveyor.core.models import ApiToken, AuditEntry, User

router = APIRouter(prefix="/api/v1", tags=["core"])


class UserOut(BaseModel):
    name: str
    role: str
    kind: str
    disabled: bool
    created_at: datetime


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=63)
    role: str = Field(max_length=32)
    password: str | None = Field(default=None, max_length=1024)


class UserChange(BaseModel):
    role: str | None = Field(default=None, max_length=32)
    disabled: bool | None = None


class UserCreated(UserOut):
    token: str


class TokenIn(BaseModel):
    description: str = Field(default="", max_length=200)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenOut(BaseModel):
    token: str
    id: int
    prefix: str
    expires_at: datetime | None


class TokenInfo(BaseModel):
    id: int
    prefix: str
    description: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    scope: dict[str, Any] | None


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


def _user_out(u: User) -> UserOut:
    return UserOut(name=u.name, role=u.role, kind=u.kind, disabled=u.disabled, created_at=u.created_at)


def _token_info(t: ApiToken) -> TokenInfo:
    return TokenInfo(id=t.id, prefix=t.prefix, description=t.description, created_at=t.created_at,
                     last_used_at=t.last_used_at, expires_at=t.expires_at, revoked_at=t.revoked_at,
                     revoked_by=t.revoked_by, scope=t.scope)


def _self_or_admin(principal: Principal, name: str) -> None:
    """People manage their own tokens; admins manage everyone's."""
    if principal.name == name and principal.scope is None and not principal.anonymous:
        return
    principal.require(Permission.MANAGE_USERS)


@router.get("/user", response_model=UserOut)
def whoami(session: SessionDep, principal: PrincipalDep) -> UserOut:
    principal.require(Permission.READ)
    if principal.anonymous:
        raise Unauthorized("not signed in", rule="auth.token-required")
    return _user_out(get_user(session, principal.name))


@router.get("/users", response_model=list[UserOut])
def list_users(session: SessionDep, principal: PrincipalDep) -> list[UserOut]:
    principal.require(Permission.READ)
    return [_user_out(u) for u in session.execute(select(User).order_by(User.name)).scalars()]


@router.post("/users", response_model=UserCreated, status_code=201)
def add_user(body: UserCreate, session: SessionDep, principal: PrincipalDep) -> UserCreated:
    principal.require(Permission.MANAGE_USERS)
    user, token = create_user(session, body.name, body.role, body.password)
    record(session, actor=principal.name, action="user.created", target=user.name, payload={"role": user.role})
    return UserCreated(**_user_out(user).model_dump(), token=token)


@router.patch("/users/{name}", response_model=UserOut)
def change_user(name: str, body: UserChange, session: SessionDep, principal: PrincipalDep) -> UserOut:
    """Change a user's role or disable/enable them; takes effect at once everywhere (API, git, registry, UI)."""
    principal.require(Permission.MANAGE_USERS)
    user = get_user(session, name)
    if user.kind != Kind.PERSON:
        raise InvalidInput(f"'{name}' is a {user.kind} identity: manage it through its component",
                           rule="user.kind")
    if name == principal.name and (body.disabled or (body.role is not None and body.role != user.role)):
        raise Forbidden("admins cannot disable themselves or change their own role", rule="user.self-change")
    if body.role is not None and body.role != user.role:
        old = user.role
        set_role(session, user, body.role)
        record(session, actor=principal.name, action="user.role_changed", target=name,
               payload={"from": old, "to": user.role})
    if body.disabled is not None and body.disabled != user.disabled:
        set_disabled(session, user, body.disabled)
        record(session, actor=principal.name, action="user.disabled" if body.disabled else "user.enabled",
               target=name)
    return _user_out(user)


@router.get("/users/{name}/tokens", response_model=list[TokenInfo])
def user_tokens(name: str, session: SessionDep, principal: PrincipalDep) -> list[TokenInfo]:
    _self_or_admin(principal, name)
    return [_token_info(t) for t in list_tokens(session, get_user(session, name))]


@router.post("/users/{name}/tokens", response_model=TokenOut, status_code=201)
def new_user_token(name: str, session: SessionDep, principal: PrincipalDep, body: TokenIn | None = None) -> TokenOut:
    _self_or_admin(principal, name)
    body = body or TokenIn()
    user = get_user(session, name)
    if user.kind == Kind.SERVICE:
        raise Forbidden("service identities' tokens are issued by the server itself", rule="token.service")
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row, token = new_token(session, user, body.description or f"issued by {principal.name}", expires_at=expires)
    record(session, actor=principal.name, action="token.issued", target=name,
           payload={"token_id": row.id, "prefix": row.prefix})
    return TokenOut(token=token, id=row.id, prefix=row.prefix, expires_at=row.expires_at)


@router.delete("/users/{name}/tokens/{ident}", status_code=204)
def revoke_user_token(name: str, ident: str, session: SessionDep, principal: PrincipalDep) -> Response:
    """Revoke a token by id or prefix; it stops working at once for the API, git, registry and dashboard."""
    _self_or_admin(principal, name)
    row = find_token(session, get_user(session, name), ident)
    revoke_token(session, row, principal.name)
    record(session, actor=principal.name, action="token.revoked", target=name,
           payload={"token_id": row.id, "prefix": row.prefix})
    return Response(status_code=204)


@router.get("/audit", response_model=list[AuditOut])
def audit_log(session: SessionDep, principal: PrincipalDep, limit: int = 100) -> list[AuditOut]:
    principal.require(Permission.MANAGE_USERS)
    rows = session.execute(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(min(max(limit, 1), 1000))).scalars()
    return [
        AuditOut(id=r.id, at=r.at, actor=r.actor, action=r.action, target=r.target, detail=r.detail) for r in rows
    ]

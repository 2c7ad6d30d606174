"""Core REST routes: who am I, users, tokens, the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from conveyor.core.auth import Permission, create_user, get_user, issue_token
from conveyor.core.events import record
from conveyor.core.http import PrincipalDep, SessionDep
from conveyor.core.models import AuditEntry, User

router = APIRouter(prefix="/api/v1", tags=["core"])


class UserOut(BaseModel):
    name: str
    role: str
    created_at: datetime


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=63)
    role: str
    password: str | None = None


class UserCreated(UserOut):
    token: str


class TokenOut(BaseModel):
    token: str


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


def _user_out(u: User) -> UserOut:
    return UserOut(name=u.name, role=u.role, created_at=u.created_at)


@router.get("/user", response_model=UserOut)
def whoami(session: SessionDep, principal: PrincipalDep) -> UserOut:
    principal.require(Permission.READ)
    if principal.anonymous:
        from conveyor.core.errors import Unauthorized

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
    return UserCreated(name=user.name, role=user.role, created_at=user.created_at, token=token)


@router.post("/users/{name}/tokens", response_model=TokenOut, status_code=201)
def new_token(name: str, session: SessionDep, principal: PrincipalDep) -> TokenOut:
    if principal.name != name:
        principal.require(Permission.MANAGE_USERS)
    else:
        principal.require(Permission.READ)
    user = get_user(session, name)
    token = issue_token(session, user, f"issued by {principal.name}")
    record(session, actor=principal.name, action="token.issued", target=name)
    return TokenOut(token=token)


@router.get("/audit", response_model=list[AuditOut])
def audit_log(session: SessionDep, principal: PrincipalDep, limit: int = 100) -> list[AuditOut]:
    principal.require(Permission.MANAGE_USERS)
    rows = session.execute(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(min(limit, 1000))).scalars()
    return [
        AuditOut(id=r.id, at=r.at, actor=r.actor, action=r.action, target=r.target, detail=r.detail) for r in rows
    ]

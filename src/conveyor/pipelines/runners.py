"""Runner registrations: who may claim runs, with which labels, for which repositories.

A runner is an identity (``runner-<name>``, core ``Kind.RUNNER``) whose tokens are narrowed to the
runner protocol (``Scope(runner=name)``): claim runs, report them, nothing else. Labels and the
repository limit live on the registration, so an administrator changes them without new tokens.
The server's own runner (``conveyor up --runners N``) is registered like any other, as
``builtin-<host>``; its token stays in the server's memory.
"""

from __future__ import annotations

import re
import socket
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Conflict, Database, InvalidInput, Kind, NotFound, Principal, Unauthorized, record, utcnow
from conveyor.core.identities import (
    ensure_identity,
    issue_token,
    list_tokens,
    new_token,
    revoke_token,
    set_disabled,
    token_row,
)
from conveyor.pipelines.models import Runner

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
_LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def identity_name(runner: str) -> str:
    return f"runner-{runner}"


def _check(name: str, labels: list[str]) -> None:
    if not _NAME.match(name):
        raise InvalidInput("runner names are 1-50 lowercase letters, digits and '-'", rule="runner.name")
    bad = [label for label in labels if not _LABEL.match(label)]
    if bad:
        raise InvalidInput(f"invalid runner label(s): {', '.join(bad)}", rule="runner.label")


def register(session: Session, principal: Principal, name: str, labels: list[str],
             repos: list[str]) -> tuple[Runner, str]:
    _check(name, labels)
    row = session.execute(select(Runner).where(Runner.name == name)).scalar_one_or_none()
    if row is not None and not row.revoked:
        raise Conflict(f"runner '{name}' is already registered", rule="runner.unique-name")
    if row is None:
        row = Runner(name=name, created_by=principal.name)
        session.add(row)
    row.labels, row.repos, row.revoked = sorted(set(labels)), sorted(set(repos)), False
    user = ensure_identity(session, identity_name(name), Kind.RUNNER)
    set_disabled(session, user, False)
    token = issue_token(session, user, f"runner {name}")
    session.flush()
    record(session, actor=principal.name, action="runner.registered", target=name,
           payload={"runner": name, "labels": row.labels, "repos": row.repos})
    return row, token


def revoke(session: Session, principal: Principal, name: str) -> None:
    row = get(session, name)
    row.revoked = True
    user = ensure_identity(session, identity_name(name), Kind.RUNNER)
    for t in list_tokens(session, user):
        revoke_token(session, t, principal.name)
    set_disabled(session, user, True)
    from conveyor.pipelines import queue
    from conveyor.pipelines.config import EngineConfig
    from conveyor.pipelines.models import Run

    for run in session.execute(select(Run).where(Run.runner == name, Run.state == "running")).scalars():
        queue.interrupt(session, run, EngineConfig.from_env().max_attempts,
                        f"was interrupted: runner {name} was revoked")
    record(session, actor=principal.name, action="runner.revoked", target=name, payload={"runner": name})


def get(session: Session, name: str) -> Runner:
    row = session.execute(select(Runner).where(Runner.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no runner named '{name}'", rule="runner.exists")
    return row


def list_runners(session: Session) -> list[Runner]:
    return list(session.execute(select(Runner).order_by(Runner.name)).scalars())


def authenticated(session: Session, principal: Principal) -> Runner:
    """The registration behind a runner token (touching its last-seen time)."""
    name = principal.scope.runner if principal.scope is not None else None
    if name is None:
        raise Unauthorized("the runner API needs a runner token (see `conveyor runner register`)",
                           rule="runner.token")
    row = get(session, name)
    if row.revoked:
        raise Unauthorized(f"runner '{name}' was revoked", rule="runner.revoked")
    now = utcnow()
    if row.last_seen_at is None or (now - row.last_seen_at).total_seconds() > 10:
        row.last_seen_at = now
    return row


def builtin_name() -> str:
    host = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:30].strip("-") or "host"
    return f"builtin-{host}"


BUILTIN_TOKEN_TTL = timedelta(days=7)


def ensure_builtin(db: Database, labels: list[str]) -> tuple[int, str]:
    """The server's own runner: registered on first start; each start gets a token of its own, kept in
    memory only, revoked at stop (and expiring, should the server die). Returns (token id, token)."""
    name = builtin_name()
    system = Principal(name="system", role=None, kind=Kind.SERVICE, user_id=0)
    with db.session() as s:
        row = s.execute(select(Runner).where(Runner.name == name)).scalar_one_or_none()
        if row is None or row.revoked:
            register(s, system, name, labels, [])
        user = ensure_identity(s, identity_name(name), Kind.RUNNER)
        row_, token = new_token(s, user, f"runner {name} (server process)",
                                expires_at=utcnow() + BUILTIN_TOKEN_TTL)
        return row_.id, token


def retire_builtin(db: Database, token_id: int) -> None:
    with db.session() as s:
        row = token_row(s, token_id)
        if row is not None:
            revoke_token(s, row, "system")

"""Registering a cluster with the server: its agent identity (``agent-<name>``) and what it runs.

The agent identity holds narrowed tokens only (``Scope(repo_kinds=("gitops",), cluster=name)``):
it reads the GitOps repositories over git and posts ``conveyor/deploy/<name>/*`` statuses, and
nothing else — not even reads of the API. Rotating its token revokes the previous ones.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.clusters.models import RegisteredCluster
from conveyor.clusters.spec import check_name
from conveyor.core import Conflict, InvalidInput, Kind, NotFound, Principal, agent_name, record
from conveyor.core.identities import ensure_identity, issue_token, list_tokens, revoke_token, set_disabled


class AgentKind(StrEnum):
    CONVEYOR = "conveyor"
    FLUX = "flux"


def parse_agent(value: str) -> AgentKind:
    try:
        return AgentKind(value)
    except ValueError:
        raise InvalidInput(f"unknown agent '{value}'; expected one of: {', '.join(a.value for a in AgentKind)}",
                           rule="cluster.agent") from None


def get_registration(session: Session, name: str) -> RegisteredCluster:
    row = session.execute(select(RegisteredCluster).where(RegisteredCluster.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no cluster named '{name}' is registered (see `conveyor cluster register`)",
                       rule="cluster.registered")
    return row


def registrations(session: Session) -> list[RegisteredCluster]:
    return list(session.execute(select(RegisteredCluster).order_by(RegisteredCluster.name)).scalars())


def register(session: Session, principal: Principal, name: str, agent: str = "conveyor",
             kubernetes_version: str = "") -> tuple[RegisteredCluster, str]:
    """Register a cluster and create its agent identity; returns the registration and an agent token."""
    check_name(name)
    kind = parse_agent(agent)
    if session.execute(select(RegisteredCluster.id).where(RegisteredCluster.name == name)).first() is not None:
        raise Conflict(f"cluster '{name}' is already registered", rule="cluster.unique-name")
    row = RegisteredCluster(name=name, agent=kind.value, kubernetes_version=kubernetes_version[:32],
                            created_by=principal.name)
    session.add(row)
    user = ensure_identity(session, agent_name(name), Kind.AGENT)
    set_disabled(session, user, False)
    for old in list_tokens(session, user):  # a cluster registered again gets a fresh identity
        revoke_token(session, old, principal.name)
    token = issue_token(session, user, f"agent of cluster {name}")
    session.flush()
    record(session, actor=principal.name, action="cluster.registered", target=name,
           payload={"cluster": name, "agent": kind.value, "kubernetes_version": row.kubernetes_version})
    return row, token


def rotate_agent_token(session: Session, principal: Principal, name: str) -> str:
    get_registration(session, name)
    user = ensure_identity(session, agent_name(name), Kind.AGENT)
    for old in list_tokens(session, user):
        revoke_token(session, old, principal.name)
    token = issue_token(session, user, f"agent of cluster {name}")
    record(session, actor=principal.name, action="cluster.agent_token_rotated", target=name, payload={"cluster": name})
    return token


def unregister(session: Session, principal: Principal, name: str) -> None:
    row = get_registration(session, name)
    user = ensure_identity(session, agent_name(name), Kind.AGENT)
    for old in list_tokens(session, user):
        revoke_token(session, old, principal.name)
    set_disabled(session, user, True)
    session.delete(row)
    record(session, actor=principal.name, action="cluster.unregistered", target=name, payload={"cluster": name})

"""Registering a cluster with the server: its agent identity (``agent-<name>``) and what it runs.

The agent identity holds narrowed tokens only (``Scope(repo_kinds=("gitops",), cluster=name)``):
it reads the GitOps repositories over git and posts ``conveyor/deploy/<name>/*`` statuses, and
nothing else — not even reads of the API. Rotating its token revokes the previous ones.
"""

from __future__ import annotations

import secrets
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.clusters.models import RegisteredCluster
from conveyor.clusters.spec import check_name
from conveyor.core import Conflict, InvalidInput, Kind, NotFound, Principal, Role, Scope, agent_name, record
from conveyor.core.identities import ensure_identity, issue_token, list_tokens, revoke_token, set_disabled

FLUX_GIT_TOKEN = "flux git read-only"


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
             kubernetes_version: str = "", age_recipient: str | None = None) -> tuple[RegisteredCluster, str]:
    """Register a cluster and create its agent identity; returns the registration and an agent token."""
    check_name(name)
    kind = parse_agent(agent)
    recipient = check_age_recipient(age_recipient) if age_recipient else None
    if session.execute(select(RegisteredCluster.id).where(RegisteredCluster.name == name)).first() is not None:
        raise Conflict(f"cluster '{name}' is already registered", rule="cluster.unique-name")
    row = RegisteredCluster(name=name, agent=kind.value, kubernetes_version=kubernetes_version[:32],
                            created_by=principal.name,
                            flux_hmac_key=new_hmac_key() if kind == AgentKind.FLUX else None,
                            age_recipient=recipient)
    session.add(row)
    user = ensure_identity(session, agent_name(name), Kind.AGENT)
    set_disabled(session, user, False)
    for old in list_tokens(session, user):  # a cluster registered again gets a fresh identity
        revoke_token(session, old, principal.name)
    token = issue_token(session, user, f"agent of cluster {name}")
    session.flush()
    record(session, actor=principal.name, action="cluster.registered", target=name,
           payload={"cluster": name, "agent": kind.value, "kubernetes_version": row.kubernetes_version,
                    "age_recipient": recipient})
    return row, token


def check_age_recipient(value: str) -> str:
    from conveyor.agent import sops

    try:
        return sops.check_recipient(value.strip())
    except ValueError as exc:
        raise InvalidInput(f"age_recipient: {exc}", rule="cluster.age-recipient") from None


def set_age_recipient(session: Session, principal: Principal, name: str, recipient: str) -> RegisteredCluster:
    """Record the cluster's (new) public age key. Only the public key: the private one never leaves
    the cluster. Secrets encrypted to the previous key open while the cluster keeps that key too."""
    row = get_registration(session, name)
    row.age_recipient = check_age_recipient(recipient)
    record(session, actor=principal.name, action="cluster.age_recipient_set", target=name,
           payload={"cluster": name, "age_recipient": row.age_recipient})
    return row


def age_recipient(session: Session, name: str) -> str:
    """The public age key application secrets for this cluster are encrypted to."""
    row = get_registration(session, name)
    if not row.age_recipient:
        raise Conflict(f"cluster '{name}' has no age key registered; install one with `conveyor cluster age-key "
                       f"{name}` (or `conveyor agent key install` where its agent runs)", rule="cluster.age-key")
    return row.age_recipient


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


def agent_principal(session: Session, name: str) -> Principal:
    """The cluster's agent identity as a principal, for statuses the server posts on its behalf
    (Flux's events): the same narrowed scope its own tokens carry, nothing more."""
    get_registration(session, name)
    user = ensure_identity(session, agent_name(name), Kind.AGENT)
    return Principal(name=user.name, role=Role(user.role), user_id=user.id, kind=Kind.AGENT,
                     scope=Scope(repo_kinds=("gitops",), cluster=name))


def new_hmac_key() -> str:
    return secrets.token_hex(32)


def flux_registration(session: Session, name: str) -> RegisteredCluster:
    row = get_registration(session, name)
    if row.agent != AgentKind.FLUX:
        raise Conflict(f"cluster '{name}' runs the {row.agent} agent, not Flux (register it with --agent flux)",
                       rule="cluster.flux-agent")
    return row


def rotate_flux_key(session: Session, principal: Principal, name: str) -> str:
    """A new HMAC key for the cluster's generic-hmac Provider; events signed with the old one are refused."""
    row = flux_registration(session, name)
    row.flux_hmac_key = new_hmac_key()
    record(session, actor=principal.name, action="cluster.flux_key_rotated", target=name, payload={"cluster": name})
    return row.flux_hmac_key


def issue_flux_git_token(session: Session, principal: Principal, name: str) -> str:
    """A read-only git credential of the agent identity for Flux's GitRepository (it cannot post
    statuses: its scope names no cluster). Earlier ones are revoked, so the newest manifests are
    the only ones that work."""
    flux_registration(session, name)
    user = ensure_identity(session, agent_name(name), Kind.AGENT)
    for old in list_tokens(session, user):
        if old.description == FLUX_GIT_TOKEN:
            revoke_token(session, old, principal.name)
    token = issue_token(session, user, FLUX_GIT_TOKEN, scope=Scope(repo_kinds=("gitops",)))
    record(session, actor=principal.name, action="cluster.flux_git_token_issued", target=name,
           payload={"cluster": name})
    return token

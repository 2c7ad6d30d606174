"""REST routes of cluster registrations: /api/v1/clusters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from conveyor.clusters import agent_reports, registration
from conveyor.clusters.flux import api as flux_api
from conveyor.clusters.models import RegisteredCluster
from conveyor.core import NotFound, Permission, PrincipalDep, SessionDep, agent_name, state_of

router = APIRouter(prefix="/api/v1/clusters", tags=["clusters"])


class ClusterIn(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    agent: str = Field(default="conveyor", max_length=16)
    kubernetes_version: str = Field(default="", max_length=32)
    age_recipient: str | None = Field(default=None, max_length=100)  # the public half of the cluster's age key


class AgeRecipientIn(BaseModel):
    age_recipient: str = Field(min_length=1, max_length=100)


class ClusterOut(BaseModel):
    name: str
    agent: str
    kubernetes_version: str
    age_recipient: str | None
    agent_user: str
    created_by: str
    created_at: datetime


class ClusterRegistered(ClusterOut):
    agent_token: str
    flux: flux_api.FluxBundle | None = None  # agent flux: events URL, HMAC key (shown once), manifests


class AgentToken(BaseModel):
    agent_token: str


class EnvironmentOut(BaseModel):
    """An environment whose branch the cluster runs: what its agent syncs."""

    repo: str
    env: str
    branch: str
    path: str


def _out(row: RegisteredCluster) -> ClusterOut:
    return ClusterOut(name=row.name, agent=row.agent, kubernetes_version=row.kubernetes_version,
                      age_recipient=row.age_recipient, agent_user=agent_name(row.name), created_by=row.created_by,
                      created_at=row.created_at)


@router.post("", response_model=ClusterRegistered, status_code=201)
def register_cluster(body: ClusterIn, request: Request, session: SessionDep,
                     principal: PrincipalDep) -> ClusterRegistered:
    """Register a cluster and create its agent identity; the agent token (and a Flux cluster's HMAC
    key) is shown once."""
    principal.require(Permission.MANAGE_REPO)
    row, token = registration.register(session, principal, body.name, body.agent, body.kubernetes_version,
                                       body.age_recipient)
    flux = None
    if row.agent == registration.AgentKind.FLUX:
        flux = flux_api.bundle(session, state_of(request).settings, principal, row, flux_api.targets_of(request),
                               agent_token=token)
    return ClusterRegistered(**_out(row).model_dump(), agent_token=token, flux=flux)


@router.get("", response_model=list[ClusterOut])
def list_clusters(session: SessionDep, principal: PrincipalDep) -> list[ClusterOut]:
    principal.require(Permission.READ)
    return [_out(r) for r in registration.registrations(session)]


@router.get("/{name}", response_model=ClusterOut)
def show_cluster(name: str, session: SessionDep, principal: PrincipalDep) -> ClusterOut:
    principal.require(Permission.READ)
    return _out(registration.get_registration(session, name))


@router.get("/{name}/environments", response_model=list[EnvironmentOut])
def cluster_environments(name: str, request: Request, session: SessionDep,
                         principal: PrincipalDep) -> list[EnvironmentOut]:
    """Delivery's environments (each GitOps repository's main) on this cluster: `agent install`'s syncs."""
    principal.require(Permission.READ)
    registration.get_registration(session, name)
    found = flux_api.targets_of(request)(session, state_of(request).settings, name)
    return [EnvironmentOut(repo=t.repo, env=t.env, branch=t.branch, path=t.path.removeprefix("./")) for t in found]


@router.post("/{name}/agent-token", response_model=AgentToken, status_code=201)
def rotate_agent_token(name: str, session: SessionDep, principal: PrincipalDep) -> AgentToken:
    """Issue a new agent token; every earlier one stops working at once."""
    principal.require(Permission.MANAGE_REPO)
    return AgentToken(agent_token=registration.rotate_agent_token(session, principal, name))


@router.put("/{name}/age-recipient", response_model=ClusterOut)
def set_age_recipient(name: str, body: AgeRecipientIn, session: SessionDep, principal: PrincipalDep) -> ClusterOut:
    """Record the public half of the cluster's age key (installed or rotated in the cluster)."""
    principal.require(Permission.MANAGE_REPO)
    return _out(registration.set_age_recipient(session, principal, name, body.age_recipient))


@router.put("/{name}/agent-status", status_code=204)
def report_agent_status(name: str, body: dict[str, Any], session: SessionDep, principal: PrincipalDep) -> Response:
    """The cluster's agent reports its /status document (syncs, inventory, events) for the dashboard."""
    agent_reports.store(session, principal, name, body)
    return Response(status_code=204)


@router.get("/{name}/agent-status")
def agent_status(name: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    """What the cluster's agent last reported, as the server keeps it (checked and bounded: syncs with
    their object trees, and events), with when it reported."""
    principal.require(Permission.READ)
    row = registration.get_registration(session, name)
    report = agent_reports.last_report(session, row.name)
    if report is None:
        raise NotFound(f"the agent of cluster '{row.name}' has not reported its status yet",
                       rule="cluster.agent-status-missing")
    document, reported_at = report
    return {"cluster": row.name, "reported_at": reported_at.isoformat(), **document}


@router.delete("/{name}", status_code=204)
def unregister_cluster(name: str, session: SessionDep, principal: PrincipalDep) -> Response:
    principal.require(Permission.MANAGE_REPO)
    registration.unregister(session, principal, name)
    return Response(status_code=204)

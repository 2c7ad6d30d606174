"""REST routes for clusters whose agent is Flux: its events endpoint, its key and its manifests.

``POST /api/v1/clusters/{name}/flux/events`` takes both forms Flux sends (see ``events.py``):
signed by notification-controller (``X-Signature``, the cluster's HMAC key), or posted by the
controllers to their ``--events-addr`` with the agent identity's token as basic auth (or
Bearer). Anything else is refused before the body is read as an event: 401 without
credentials or with a wrong signature or token, 403 for a valid token of another identity.
A valid event is answered 202 with what Conveyor made of it (posted, or why not); Flux's
clients retry only 5xx and connection errors, so a 4xx is final.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from conveyor.clusters import registration
from conveyor.clusters.flux.events import MAX_BODY, check_signature, parse
from conveyor.clusters.flux.manifests import FluxSetup, SyncTarget, events_addr, render, webhook_hints
from conveyor.clusters.flux.report import apply_event, last_reports
from conveyor.clusters.models import RegisteredCluster
from conveyor.core import (
    ConveyorError,
    Forbidden,
    Kind,
    Permission,
    Principal,
    PrincipalDep,
    SessionDep,
    Settings,
    Unprocessable,
    agent_name,
    state_of,
)
from conveyor.core.http import principal_from_header

router = APIRouter(prefix="/api/v1/clusters", tags=["clusters"])

# The environments a cluster runs come from delivery; server.py puts the lister on app.state.
TargetLister = Callable[[Session, Settings, str], list[SyncTarget]]
STATE_KEY = "flux_targets"


class PayloadTooLarge(ConveyorError):
    status = 413
    title = "Payload too large"


class FluxBundle(BaseModel):
    events_url: str
    events_addr: str | None = None  # only when the agent token is known (at registration)
    hmac_key: str
    manifests: str
    webhooks: list[dict[str, str]]


class FluxKey(BaseModel):
    hmac_key: str


class FluxReportOut(BaseModel):
    kind: str
    namespace: str
    name: str
    controller: str
    severity: str
    reason: str
    message: str
    revision: str
    outcome: str
    reported_at: datetime


def targets_of(request: Request) -> TargetLister:
    lister: TargetLister | None = getattr(request.app.state, STATE_KEY, None)
    return lister or (lambda _s, _settings, _cluster: [])


def bundle(session: Session, settings: Settings, principal: Principal, row: RegisteredCluster,
           targets: TargetLister, agent_token: str | None = None) -> FluxBundle:
    """Manifests with a fresh read-only git token (earlier ones are revoked)."""
    git_token = registration.issue_flux_git_token(session, principal, row.name)
    setup = FluxSetup(row.name, settings.base_url.rstrip("/"), agent_name(row.name), git_token,
                      row.flux_hmac_key or "")
    found = targets(session, settings, row.name)
    return FluxBundle(events_url=setup.events_url, events_addr=events_addr(setup, agent_token) if agent_token else None,
                      hmac_key=setup.hmac_key, manifests=render(setup, found), webhooks=webhook_hints(setup, found))


@router.post("/{name}/flux/manifests", response_model=FluxBundle, status_code=201)
def flux_manifests(name: str, request: Request, session: SessionDep, principal: PrincipalDep) -> FluxBundle:
    """The Flux objects for every environment on the cluster (issues a new read-only git token)."""
    principal.require(Permission.MANAGE_REPO)
    row = registration.flux_registration(session, name)
    return bundle(session, state_of(request).settings, principal, row, targets_of(request))


@router.post("/{name}/flux/key", response_model=FluxKey, status_code=201)
def rotate_flux_key(name: str, session: SessionDep, principal: PrincipalDep) -> FluxKey:
    """A new HMAC key; events signed with the old one are refused from now on."""
    principal.require(Permission.MANAGE_REPO)
    return FluxKey(hmac_key=registration.rotate_flux_key(session, principal, name))


@router.get("/{name}/flux/reports", response_model=list[FluxReportOut])
def flux_reports(name: str, session: SessionDep, principal: PrincipalDep) -> list[FluxReportOut]:
    """What Flux last reported for each of its objects on the cluster."""
    principal.require(Permission.READ)
    registration.flux_registration(session, name)
    return [FluxReportOut.model_validate(r, from_attributes=True) for r in last_reports(session, name)]


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"a Flux event is at most {MAX_BODY} bytes", rule="flux.event-size")
        chunks.append(chunk)
    return b"".join(chunks)


def authenticate(session: Session, row: RegisteredCluster, headers: dict[str, str], body: bytes) -> str:
    """Which of Flux's two forms authenticated the event; raises 401/403 otherwise."""
    signature, authorization = headers.get("x-signature"), headers.get("authorization")
    if signature or not authorization:
        check_signature(signature, body, row.flux_hmac_key or "")
        return "notification-controller (generic-hmac)"
    principal = principal_from_header(session, authorization, anonymous_read=False)
    scope = principal.scope
    if principal.kind != Kind.AGENT or scope is None or scope.cluster != row.name:
        raise Forbidden(f"only the agent identity of cluster '{row.name}' ({agent_name(row.name)}) may post its "
                        f"Flux events, not '{principal.name}'", rule="flux.agent-only")
    return "controller (--events-addr)"


def handle(state_settings: Settings, db_session: Callable[[], Any], name: str, headers: dict[str, str],
           body: bytes) -> dict[str, Any]:
    with db_session() as s:
        row = registration.flux_registration(s, name)
        sender = authenticate(s, row, headers, body)
        event = parse(body)
        named = event.metadata.get("cluster")
        if named and named != name:
            raise Unprocessable(f"the event names cluster '{named}' but was sent to the events URL of '{name}'",
                                rule="flux.cluster-mismatch")
        outcome = apply_event(s, state_settings, registration.agent_principal(s, name), name, event)
    return {"sender": sender, **outcome.to_json()}


@router.post("/{name}/flux/events", status_code=202)
async def flux_event(name: str, request: Request) -> JSONResponse:
    """Receive one Flux event (notification-controller's generic-hmac, or a controller's own post)."""
    body = await _read_body(request)
    st = state_of(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    result = await asyncio.to_thread(handle, st.settings, st.db.session, name, headers, body)
    return JSONResponse(result, status_code=202)

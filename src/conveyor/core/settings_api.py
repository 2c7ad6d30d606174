"""Server-wide settings over REST (admin only): today the outbound allow-list."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from conveyor.core.auth import Permission
from conveyor.core.events import record
from conveyor.core.http import PrincipalDep, SessionDep
from conveyor.core.limits import NameText
from conveyor.core.outbound import MAX_ALLOW_ENTRIES, load_allow_list, save_allow_list

router = APIRouter(prefix="/api/v1/settings", tags=["core"])


class OutboundSettings(BaseModel):
    """Hosts, IP addresses or networks (CIDR) the server may fetch from although they are
    loopback, private, link-local or its own (see docs/security.md, "Outbound requests")."""

    allow: list[NameText] = Field(default_factory=list, max_length=MAX_ALLOW_ENTRIES)


@router.get("/outbound", response_model=OutboundSettings)
def get_outbound(session: SessionDep, principal: PrincipalDep) -> OutboundSettings:
    principal.require(Permission.MANAGE_USERS)
    return OutboundSettings(allow=list(load_allow_list(session).entries))


@router.put("/outbound", response_model=OutboundSettings)
def put_outbound(body: OutboundSettings, session: SessionDep, principal: PrincipalDep) -> OutboundSettings:
    principal.require(Permission.MANAGE_USERS)
    before = list(load_allow_list(session).entries)
    allow = save_allow_list(session, [e[:253] for e in body.allow], principal.name)
    record(session, actor=principal.name, action="settings.outbound", target="outbound.allow",
           payload={"before": before, "after": list(allow.entries)})
    return OutboundSettings(allow=list(allow.entries))

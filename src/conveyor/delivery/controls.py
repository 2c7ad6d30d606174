"""What people do to promotions besides starting them: the stop switch, releasing holds, letting one
promotion through a freeze window. Each is audited with who did it and why."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Conflict, Forbidden, InvalidInput, NotFound, Principal, Role, Settings, record, utcnow
from conveyor.delivery.gates import refresh_gates
from conveyor.delivery.governance import active_hold
from conveyor.delivery.models import Freeze, Hold, Promotion
from conveyor.delivery.records import note
from conveyor.delivery.states import ACTIVE_STATES
from conveyor.delivery.status import app_environment


def _reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise InvalidInput("say why: a reason is required", rule="governance.reason")
    return reason.strip()[:2000]


def start_freeze(session: Session, settings: Settings, principal: Principal, env: str | None, reason: str) -> Freeze:
    """The stop switch: no new merge into the environment's branch (every environment: ``env`` None)."""
    reason = _reason(reason)
    active = session.execute(select(Freeze).where(Freeze.ended_at.is_(None), Freeze.env.is_(None) if env is None
                                                  else Freeze.env == env)).scalar_one_or_none()
    if active is not None:
        raise Conflict(f"{'every environment' if env is None else env} is already frozen since "
                       f"{active.started_at:%Y-%m-%d %H:%M} by {active.started_by}: {active.reason}",
                       rule="freeze.active", freeze=active.id)
    f = Freeze(env=env, reason=reason, started_by=principal.name)
    session.add(f)
    session.flush()
    record(session, actor=principal.name, action="delivery.freeze.started", target=env or "*",
           payload={"freeze": f.id, "env": env, "reason": reason})
    refresh_gates(session, settings)  # in this transaction: the next merge is already refused
    return f


def end_freeze(session: Session, settings: Settings, principal: Principal, env: str | None,
               reason: str | None = None) -> Freeze:
    f = session.execute(select(Freeze).where(Freeze.ended_at.is_(None), Freeze.env.is_(None) if env is None
                                             else Freeze.env == env)).scalar_one_or_none()
    if f is None:
        raise NotFound(f"no stop switch is on for {'every environment' if env is None else env}",
                       rule="freeze.exists")
    f.ended_by, f.ended_at = principal.name, utcnow()
    record(session, actor=principal.name, action="delivery.freeze.ended", target=env or "*",
           payload={"freeze": f.id, "env": env, "reason": (reason or "").strip()})
    refresh_gates(session, settings)
    return f


def list_freezes(session: Session, active: bool = True) -> list[Freeze]:
    q = select(Freeze).order_by(Freeze.id.desc())
    if active:
        q = q.where(Freeze.ended_at.is_(None))
    return list(session.execute(q.limit(200)).scalars())


def _may_decide(principal: Principal, roles: tuple[str, ...], what: str, rule: str) -> None:
    if principal.role == Role.ADMIN or (principal.role is not None and principal.role.value in roles):
        return
    allowed = " or ".join(("admin", *roles))
    raise Forbidden(f"{what} needs role {allowed}; '{principal.name}' is {principal.role}", rule=rule)


def release_hold(session: Session, settings: Settings, principal: Principal, app: str, env_name: str,
                 reason: str) -> Hold:
    """Automatic promotions of ``app`` into ``env_name`` go on (the environment's approvers decide)."""
    reason = _reason(reason)
    _, env = app_environment(session, settings, app, env_name)
    h = active_hold(session, app, env_name)
    if h is None:
        raise NotFound(f"{app} is not held in {env_name}", rule="hold.exists")
    _may_decide(principal, env.approvals.approver_roles or ("cluster-admin",), f"releasing {app} in {env_name}",
                "hold.release-role")
    h.released_by, h.released_at, h.release_reason = principal.name, utcnow(), reason
    record(session, actor=principal.name, action="delivery.hold.released", target=f"{app}->{env_name}",
           payload={"app": app, "env": env_name, "hold": h.id, "reason": reason})
    return h


def override_freeze(session: Session, settings: Settings, principal: Principal, pid: int, reason: str) -> Promotion:
    """Let one promotion through its environment's freeze windows (not through the stop switch)."""
    reason = _reason(reason)
    p = session.get(Promotion, pid)
    if p is None:
        raise NotFound(f"no promotion {pid}", rule="promotion.exists")
    if p.state not in ACTIVE_STATES:
        raise Conflict(f"promotion {pid} is {p.state}", rule="promotion.active")
    _, env = app_environment(session, settings, p.app, p.env)
    _may_decide(principal, env.freeze.override_roles, f"letting promotion {pid} through {p.env}'s freeze windows",
                "freeze.override-role")
    p.override_by, p.override_reason = principal.name, reason
    note(session, p, "freeze_override", reason, by=principal.name)
    return p

"""Delivery routes: the GitOps repository, apps, promotions, rollbacks, DORA metrics."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from sqlalchemy import select

from conveyor.core import NotFound, Permission, PrincipalDep, SessionDep, state_of
from conveyor.delivery import controls, gitops, start, status
from conveyor.delivery.models import App, Freeze, Hold, Promotion
from conveyor.delivery.schemas_api import (
    DoraOut,
    EnvStatusOut,
    EventOut,
    FreezeEndIn,
    FreezeIn,
    FreezeOut,
    GitopsInit,
    HoldOut,
    PromoteIn,
    PromotionOut,
    ReasonIn,
    RollbackIn,
)

router = APIRouter(prefix="/api/v1", tags=["delivery"])


def promotion_out(p: Promotion, with_events: bool = False) -> PromotionOut:
    return PromotionOut(
        id=p.id, app=p.app, env=p.env, version=p.version, state=p.state, image=p.image,
        image_digest=p.image_digest, image_tag=p.image_tag, source_repo=p.source_repo,
        source_commit=p.source_commit, author=p.author, ci_run=p.ci_run, gitops_repo=p.gitops_repo,
        pr_number=p.pr_number, merge_commit=p.merge_commit, rollback_pr_number=p.rollback_pr_number,
        is_rollback=p.is_rollback, failure_reason=p.failure_reason, created_at=p.created_at,
        finished_at=p.finished_at, started_by=p.started_by, override_by=p.override_by,
        override_reason=p.override_reason, risk=list(p.risk or []), extra_approvals=p.extra_approvals or 0,
        security_update=p.security_update,
        events=[EventOut(at=e.at, kind=e.kind, message=e.message, detail=e.detail) for e in p.events]
        if with_events else [],
    )


@router.post("/gitops", status_code=201)
def gitops_init(body: GitopsInit, request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, object]:
    principal.require(Permission.MANAGE_REPO)
    envs = gitops.init_gitops_repo(session, state_of(request).settings, principal, body.repo, body.environments)
    return {"repo": body.repo, "environments": {n: {"cluster": e.cluster, "branch": e.branch, "after": e.after}
                                                for n, e in envs.items()}}


@router.get("/apps")
def list_apps(session: SessionDep, principal: PrincipalDep) -> list[dict[str, str]]:
    principal.require(Permission.READ)
    return [{"name": a.name, "source_repo": a.source_repo, "gitops_repo": a.gitops_repo}
            for a in session.execute(select(App).order_by(App.name)).scalars()]


@router.get("/apps/{app}", response_model=list[EnvStatusOut])
def app_status(app: str, request: Request, session: SessionDep, principal: PrincipalDep) -> list[EnvStatusOut]:
    principal.require(Permission.READ)
    out = []
    for st in status.app_status(session, state_of(request).settings, app):
        r = st.running
        out.append(EnvStatusOut(
            env=st.env, cluster=st.cluster, version=r.version if r else None, commit=r.source_commit if r else None,
            image_digest=r.image_digest if r else None, state=st.last.state if st.last else None,
            pending=promotion_out(st.pending) if st.pending else None, lead_time_seconds=st.lead_time_seconds,
            frozen=st.frozen, upcoming_freeze=st.upcoming_freeze, held=st.held,
        ))
    return out


@router.get("/apps/{app}/dora", response_model=list[DoraOut])
def app_dora(app: str, request: Request, session: SessionDep, principal: PrincipalDep, days: int = 30) -> list[DoraOut]:
    principal.require(Permission.READ)
    return [DoraOut(**asdict(d)) for d in status.dora_for(session, state_of(request).settings, app, days)]


@router.post("/apps/{app}/promote", response_model=PromotionOut, status_code=201)
def promote(app: str, body: PromoteIn, request: Request, session: SessionDep, principal: PrincipalDep) -> PromotionOut:
    principal.require(Permission.WRITE)
    return promotion_out(start.promote(session, state_of(request).settings, app, body.env, body.version,
                                       by=principal.name))


@router.post("/apps/{app}/rollback", response_model=PromotionOut, status_code=201)
def rollback(
    app: str, body: RollbackIn, request: Request, session: SessionDep, principal: PrincipalDep
) -> PromotionOut:
    principal.require(Permission.WRITE)
    return promotion_out(start.rollback(session, state_of(request).settings, app, body.env, body.to,
                                        by=principal.name))


@router.get("/promotions", response_model=list[PromotionOut])
def list_promotions(session: SessionDep, principal: PrincipalDep, app: str | None = None, env: str | None = None,
                    limit: int = 100) -> list[PromotionOut]:
    principal.require(Permission.READ)
    q = select(Promotion)
    if app:
        q = q.where(Promotion.app == app)
    if env:
        q = q.where(Promotion.env == env)
    rows = session.execute(q.order_by(Promotion.id.desc()).limit(min(limit, 1000))).scalars()
    return [promotion_out(p) for p in rows]


@router.get("/promotions/{pid}", response_model=PromotionOut)
def get_promotion(pid: int, session: SessionDep, principal: PrincipalDep) -> PromotionOut:
    principal.require(Permission.READ)
    p = session.get(Promotion, pid)
    if p is None:
        raise NotFound(f"no promotion {pid}", rule="promotion.exists")
    return promotion_out(p, with_events=True)


# --- governance: the stop switch, holds, freeze overrides ------------------------------------------
def freeze_out(f: Freeze) -> FreezeOut:
    return FreezeOut(id=f.id, env=f.env, reason=f.reason, started_by=f.started_by, started_at=f.started_at,
                     ended_by=f.ended_by, ended_at=f.ended_at)


def hold_out(h: Hold) -> HoldOut:
    return HoldOut(id=h.id, app=h.app, env=h.env, reason=h.reason, created_by=h.created_by, created_at=h.created_at,
                   released_by=h.released_by, released_at=h.released_at, release_reason=h.release_reason)


@router.post("/freezes", response_model=FreezeOut, status_code=201)
def start_freeze(body: FreezeIn, request: Request, session: SessionDep, principal: PrincipalDep) -> FreezeOut:
    """The stop switch: halt every new merge into the environment's branches (all environments without env)."""
    principal.require(Permission.MANAGE_REPO)
    return freeze_out(controls.start_freeze(session, state_of(request).settings, principal, body.env, body.reason))


@router.post("/freezes/end", response_model=FreezeOut)
def end_freeze(body: FreezeEndIn, request: Request, session: SessionDep, principal: PrincipalDep) -> FreezeOut:
    principal.require(Permission.MANAGE_REPO)
    return freeze_out(controls.end_freeze(session, state_of(request).settings, principal, body.env, body.reason))


@router.get("/freezes", response_model=list[FreezeOut])
def list_freezes(session: SessionDep, principal: PrincipalDep, all: bool = False) -> list[FreezeOut]:
    principal.require(Permission.READ)
    return [freeze_out(f) for f in controls.list_freezes(session, active=not all)]


@router.get("/apps/{app}/holds", response_model=list[HoldOut])
def list_holds(app: str, session: SessionDep, principal: PrincipalDep) -> list[HoldOut]:
    principal.require(Permission.READ)
    rows = session.execute(select(Hold).where(Hold.app == app).order_by(Hold.id.desc()).limit(200)).scalars()
    return [hold_out(h) for h in rows]


@router.post("/apps/{app}/holds/{env}/release", response_model=HoldOut)
def release_hold(app: str, env: str, body: ReasonIn, request: Request, session: SessionDep,
                 principal: PrincipalDep) -> HoldOut:
    principal.require(Permission.WRITE)
    return hold_out(controls.release_hold(session, state_of(request).settings, principal, app, env, body.reason))


@router.post("/promotions/{pid}/override", response_model=PromotionOut)
def override_freeze(pid: int, body: ReasonIn, request: Request, session: SessionDep,
                    principal: PrincipalDep) -> PromotionOut:
    """Let one promotion through its environment's freeze windows, with a recorded reason."""
    principal.require(Permission.WRITE)
    return promotion_out(controls.override_freeze(session, state_of(request).settings, principal, pid, body.reason))

"""What runs where: per app and environment, from the promotion records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import ConveyorError, NotFound, Settings, utcnow
from conveyor.delivery import governance
from conveyor.delivery.contexts import GATE_CHECK
from conveyor.delivery.dora import Dora, compute
from conveyor.delivery.environments import Environment, promotion_order
from conveyor.delivery.gitops import current_environments
from conveyor.delivery.models import App, Promotion
from conveyor.delivery.states import ACTIVE_STATES
from conveyor.delivery.states import PromotionState as S
from conveyor.forge import combined_status, evaluate, get_pr, get_repo


@dataclass(frozen=True)
class EnvStatus:
    env: str
    cluster: str
    running: Promotion | None  # the newest verified (or rolled-back-to) version
    pending: Promotion | None  # an active promotion, if any
    last: Promotion | None  # the newest promotion of any state
    lead_time_seconds: float | None
    frozen: str | None = None  # the stop switch or freeze window in force now
    upcoming_freeze: str | None = None  # a freeze window starting within 24 h
    held: str | None = None  # why automatic promotions of the app into this environment are held


def get_app(session: Session, name: str) -> App:
    app = session.execute(select(App).where(App.name == name)).scalar_one_or_none()
    if app is None:
        raise NotFound(f"no app named '{name}' has been delivered yet", rule="app.exists")
    return app


def running_version(rows: list[Promotion]) -> Promotion | None:
    """After a rollback, the version running is the one verified before the rolled-back one."""
    for i, p in enumerate(rows):  # newest first
        if p.state == S.VERIFIED:
            return p
        if p.state in (S.ROLLED_BACK, S.FAILED) and p.merge_commit:
            older = [q for q in rows[i + 1:] if q.state == S.VERIFIED]
            return older[0] if older else None
    return None


def app_environment(session: Session, settings: Settings, app: str, env_name: str) -> tuple[App, Environment]:
    row = get_app(session, app)
    env = current_environments(session, settings, row.gitops_repo).get(env_name)
    if env is None:
        raise NotFound(f"no environment '{env_name}' in '{row.gitops_repo}'", rule="env.exists")
    return row, env


def app_status(session: Session, settings: Settings, name: str) -> list[EnvStatus]:
    app = get_app(session, name)
    envs = current_environments(session, settings, app.gitops_repo)
    out = []
    for env in promotion_order(envs):
        rows = list(session.execute(select(Promotion).where(Promotion.app == name, Promotion.env == env.name)
                                    .order_by(Promotion.id.desc())).scalars())
        running = running_version(rows)
        pending = next((p for p in rows if p.state in ACTIVE_STATES), None)
        lead = None
        if running and running.finished_at and running.source_committed_at:
            lead = (running.finished_at - running.source_committed_at).total_seconds()
        now = utcnow()
        frozen = "; ".join(b.message for b in governance.freeze_blocks(session, env, now)) or None
        nxt = governance.upcoming_window(env, now)
        hold = governance.active_hold(session, name, env.name)
        out.append(EnvStatus(env.name, env.cluster, running, pending, rows[0] if rows else None, lead, frozen,
                             f"{nxt[0].reason}: from {nxt[1]:%Y-%m-%d %H:%M %Z} to {nxt[2]:%Y-%m-%d %H:%M %Z}"
                             if nxt else None, hold.reason if hold else None))
    return out


def dora_for(session: Session, settings: Settings, name: str, days: int = 30,
             now: datetime | None = None) -> list[Dora]:
    app = get_app(session, name)
    envs = current_environments(session, settings, app.gitops_repo)
    rows = list(session.execute(select(Promotion).where(Promotion.app == name)).scalars())
    return [compute(rows, name, env.name, now or utcnow(), days) for env in promotion_order(envs)]


def promotion_of_pr(session: Session, gitops_repo: str, number: int) -> Promotion | None:
    """The promotion a GitOps pull request deploys, if it is one."""
    return session.execute(select(Promotion).where(Promotion.gitops_repo == gitops_repo, Promotion.pr_number == number)
                           .order_by(Promotion.id.desc()).limit(1)).scalar_one_or_none()


def waiting_on(session: Session, settings: Settings, p: Promotion, cluster: str) -> list[str]:
    """What stands between an active promotion and its next state, in the reviewers' words: the
    transition table's ``waits_for``, and for an open PR the blockers the forge names."""
    from conveyor.delivery.transitions import TRANSITIONS

    if p.state == S.PR_OPEN and p.pr_number is not None:
        try:
            repo = get_repo(session, p.gitops_repo)
            pr = get_pr(session, repo, p.pr_number)
            m = evaluate(session, settings, repo, pr)
        except ConveyorError as exc:
            return [exc.detail]
        gate = combined_status(session, repo, pr.head_sha).by_context().get(GATE_CHECK)
        pending_gate = f"required check '{GATE_CHECK}' is pending"
        return [gate.description if gate and b.message == pending_gate else b.message
                for b in m.blockers] or ["merge (every rule is satisfied)"]
    if p.state == S.MERGED:
        return [f"apply by the agent of cluster '{cluster}'"]
    t = TRANSITIONS[p.state]
    return [t.waits_for] if t.handler is not None else []

"""Governance around promotions (issue 17): freeze windows and the stop switch, holds after a rollback
and bad versions, one deployment per environment branch at a time, and risky changes that need
extra approvals. All rules come from ``environments/*.yaml`` on the GitOps repo's main, except the
stop switch and holds, which people set through the API.

The rules decide the ``conveyor/cd/gate`` check that every environment branch requires: delivery
posts it on each PR to an environment branch, ``pending`` with the reasons while a rule holds the
merge back and ``success`` otherwise. So a freeze stops a person's merge exactly like CD's own, and
the PR page says which rule waits. A rollback PR is never held back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import record
from conveyor.delivery.environments import Environment, FreezeWindow
from conveyor.delivery.models import BadVersion, Freeze, Hold, Promotion
from conveyor.delivery.records import SERVICE_USER
from conveyor.delivery.states import DEPLOYING_STATES

UPCOMING = timedelta(hours=24)


@dataclass(frozen=True)
class Block:
    rule: str
    message: str


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M %Z").strip()


def active_window(env: Environment, now: datetime) -> tuple[FreezeWindow, datetime] | None:
    """The freeze window open now and when it ends (the latest end when several overlap)."""
    found = [(w, span[1]) for w in env.freeze.windows if (span := w.around(now)) is not None]
    return max(found, key=lambda f: f[1]) if found else None


def upcoming_window(env: Environment, now: datetime, within: timedelta = UPCOMING
                    ) -> tuple[FreezeWindow, datetime, datetime] | None:
    """The next freeze window starting within ``within``."""
    found = [(w, *span) for w in env.freeze.windows if (span := w.next_after(now)) and span[0] - now <= within]
    return min(found, key=lambda f: f[1]) if found else None


def stop_switch(session: Session, env: str) -> Freeze | None:
    return session.execute(select(Freeze).where(Freeze.ended_at.is_(None), (Freeze.env == env) | Freeze.env.is_(None))
                           .order_by(Freeze.id).limit(1)).scalar_one_or_none()


def active_hold(session: Session, app: str, env: str) -> Hold | None:
    return session.execute(select(Hold).where(Hold.app == app, Hold.env == env, Hold.released_at.is_(None))
                           .order_by(Hold.id).limit(1)).scalar_one_or_none()


def bad_version(session: Session, app: str, version: str) -> BadVersion | None:
    return session.execute(select(BadVersion).where(BadVersion.app == app, BadVersion.version == version)
                           ).scalar_one_or_none()


def freeze_blocks(session: Session, env: Environment, now: datetime, overridden: bool = False) -> list[Block]:
    """The stop switch and freeze windows: what holds back any merge into ``env``'s branch."""
    blocks = []
    stop = stop_switch(session, env.name)
    if stop is not None:
        blocks.append(Block("freeze.stop-switch", f"deployments halted by {stop.started_by} since "
                                                  f"{_when(stop.started_at)}: {stop.reason}"))
    window = active_window(env, now)
    if window is not None and not overridden:
        w, ends = window
        blocks.append(Block("freeze.window", f"frozen until {_when(ends)}{f' ({w.name})' if w.name else ''}: "
                                             f"{w.reason}"))
    return blocks


def merge_blocks(session: Session, p: Promotion, env: Environment, approvers: int, now: datetime) -> list[Block]:
    """Every governance rule that holds back the merge of ``p``'s GitOps PR now."""
    blocks = freeze_blocks(session, env, now, overridden=p.override_by is not None)
    hold = active_hold(session, p.app, env.name) if p.started_by is None else None
    if hold is not None:
        blocks.append(Block("hold.after-rollback", f"automatic promotions of {p.app} into {env.name} are held since "
                                                   f"{_when(hold.created_at)}: {hold.reason}; someone with the "
                                                   "environment's approver role releases it"))
    busy = session.execute(select(Promotion).where(
        Promotion.gitops_repo == p.gitops_repo, Promotion.env == env.name, Promotion.id != p.id,
        Promotion.state.in_(DEPLOYING_STATES)).order_by(Promotion.id).limit(1)).scalar_one_or_none()
    if busy is not None:
        blocks.append(Block("deploy.one-at-a-time", f"{busy.app} {busy.version} (promotion {busy.id}) is being "
                                                    f"deployed to {env.branch} ({busy.state})"))
    if p.extra_approvals:
        need = env.approvals.required + p.extra_approvals
        if approvers < need:
            why = "; ".join(f"{r['reason']} ({r['rule']})" for r in p.risk)
            blocks.append(Block(p.risk[0]["rule"] if p.risk else "risk.extra-approvals",
                                f"a risky change needs {need} approval(s), has {approvers}: {why}"))
    return blocks


def gate_status(blocks: list[Block]) -> tuple[str, str]:
    if not blocks:
        return "success", "every delivery rule is met"
    return "pending", "; ".join(f"{b.message} [{b.rule}]" for b in blocks)[:900]


# --- holds and bad versions -----------------------------------------------------------------------
def hold(session: Session, app: str, env: str, reason: str, by: str, promotion: int | None = None) -> Hold:
    existing = active_hold(session, app, env)
    if existing is not None:
        return existing
    h = Hold(app=app, env=env, reason=reason, created_by=by, promotion_id=promotion)
    session.add(h)
    session.flush()
    record(session, actor=by, action="delivery.hold.created", target=f"{app}->{env}",
           payload={"app": app, "env": env, "reason": reason, "promotion": promotion})
    return h


def mark_bad(session: Session, p: Promotion, reason: str) -> None:
    if bad_version(session, p.app, p.version) is None:
        session.add(BadVersion(app=p.app, version=p.version, reason=reason, promotion_id=p.id))
        record(session, actor=SERVICE_USER, action="delivery.version.marked_bad", target=f"{p.app}@{p.version}",
               payload={"app": p.app, "version": p.version, "env": p.env, "reason": reason, "promotion": p.id})


# --- risky changes --------------------------------------------------------------------------------
def _objects(text: str | None) -> dict[tuple[str, str, str], Any]:
    out = {}
    for d in yaml.safe_load_all(text or ""):
        if isinstance(d, dict) and d.get("kind"):
            meta = d.get("metadata") or {}
            out[(str(d["kind"]), str(meta.get("namespace") or ""), str(meta.get("name") or ""))] = d
    return out


def sensitive_changes(rendered: str, previous: str | None, kinds: tuple[str, ...]) -> list[str]:
    """Objects of sensitive kinds that the change adds, changes or removes (``Kind/name``)."""
    new, old = _objects(rendered), _objects(previous)
    touched = sorted(k for k in set(new) | set(old) if k[0] in kinds and new.get(k) != old.get(k))
    return [f"{kind}/{f'{ns}/' if ns else ''}{name}" for kind, ns, name in touched]


def security_marked(trailers: dict[str, str], key: str) -> str | None:
    value = next((v for k, v in trailers.items() if k.lower() == key.lower()), None)
    if value is None or value.strip().lower() in ("", "no", "false", "none", "0"):
        return None
    return value.strip()


def assess_risk(env: Environment, rendered: str, previous: str | None, trailers: dict[str, str],
                security_update: str | None = None) -> list[dict[str, str]]:
    """The risk rules of ``env`` that this change trips, each with its reason. A release CI rebuilt for a
    security update (a base image's new digest) is a security-related change like a marked commit."""
    if env.risk is None:
        return []
    found = []
    marked = security_marked(trailers, env.risk.trailer)
    if security_update:
        found.append({"rule": "risk.security-change",
                      "reason": f"the release is a security update ({security_update})"})
    elif marked is not None:
        found.append({"rule": "risk.security-change",
                      "reason": f"the commit is marked security-related ({env.risk.trailer}: {marked})"})
    touched = sensitive_changes(rendered, previous, env.risk.sensitive_kinds)
    if touched:
        more = f" and {len(touched) - 5} more" if len(touched) > 5 else ""
        found.append({"rule": "risk.sensitive-kinds", "reason": f"changes {', '.join(touched[:5])}{more}"})
    return found

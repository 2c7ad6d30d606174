"""Posting the ``conveyor/cd/gate`` check on every open PR to an environment branch of every GitOps repo.

The engine keeps the gate of its own PRs current on each step; this covers the rest and the moments
when a rule changes for all PRs at once: a stop switch started or ended (in that request's
transaction, so the next merge already sees it), a freeze window opening or closing (the engine
calls it every half minute), a PR a person opened to an environment branch.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import ConveyorError, Role, Settings, service_principal, utcnow
from conveyor.delivery import governance
from conveyor.delivery.contexts import GATE_CHECK
from conveyor.delivery.gitops import current_environments, gitops_repo_names
from conveyor.delivery.models import Promotion
from conveyor.delivery.records import SERVICE_USER
from conveyor.forge import combined_status, evaluate, get_repo, list_prs, post_status

DELIVERY = service_principal(SERVICE_USER, Role.DEVELOPER)


def refresh_gates(session: Session, settings: Settings, repo_names: list[str] | None = None) -> int:
    """Bring the gate of every open environment PR in line with the rules; returns how many changed."""
    now, changed = utcnow(), 0
    for name in repo_names or gitops_repo_names(session):
        try:
            repo = get_repo(session, name)
            envs = {e.branch: e for e in current_environments(session, settings, name).values()}
        except ConveyorError:
            continue
        for pr in list_prs(session, repo, "open"):
            env = envs.get(pr.target_branch)
            if env is None or pr.state != "open":
                continue
            promotion = session.execute(select(Promotion).where(Promotion.gitops_repo == name, (
                Promotion.pr_number == pr.number) | (Promotion.rollback_pr_number == pr.number))
                .order_by(Promotion.id.desc()).limit(1)).scalar_one_or_none()
            if promotion is not None and promotion.rollback_pr_number == pr.number:
                continue  # a rollback is never held back
            if promotion is not None:
                approvers = len(evaluate(session, settings, repo, pr).approvals)
                blocks = governance.merge_blocks(session, promotion, env, approvers, now)
            else:
                blocks = governance.freeze_blocks(session, env, now)
            state, description = governance.gate_status(blocks)
            current = combined_status(session, repo, pr.head_sha).by_context().get(GATE_CHECK)
            if current is None or (current.state, current.description) != (state, description):
                post_status(session, settings, DELIVERY, repo, pr.head_sha, state=state, context=GATE_CHECK,
                            description=description)
                changed += 1
    return changed

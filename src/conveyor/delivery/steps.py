"""What the promotion engine does in each state: one handler per active state, run inside the step's
transaction (``transitions.TRANSITIONS`` maps states to these handlers and their allowed next states).

Handlers reach the forge, the agents' statuses, the clusters and the renderer only through
``ctx.ports``. Each handler is idempotent: if the process dies before the step's transaction
commits, the next attempt sees the same promotion state and does the step again (a deploy branch
written by the lost attempt is simply overwritten; PRs and statuses were in the lost transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import ConveyorError
from conveyor.delivery import governance
from conveyor.delivery.contexts import DIFF_CHECK, GATE_CHECK, cd_context
from conveyor.delivery.environments import Environment, next_environments
from conveyor.delivery.models import Promotion
from conveyor.delivery.ports import Ports, PullView
from conveyor.delivery.records import mark_failed, move, note
from conveyor.delivery.start import create_promotion, release_of
from conveyor.delivery.states import PromotionState as S
from conveyor.delivery.verification import judge

APPLY_DEADLINE = timedelta(minutes=10)


class IllegalTransition(RuntimeError):
    """A handler tried a move the transition table does not allow: a bug, never user input."""


class AllowsNext(Protocol):
    @property
    def next(self) -> frozenset[S]: ...


@dataclass
class Step:
    """One step of one promotion: its transaction, its environment and the engine's interfaces."""

    s: Session
    p: Promotion
    env: Environment
    envs: dict[str, Environment]
    ports: Ports
    now: datetime
    table: Mapping[S, AllowsNext]
    effects: list[Callable[[], None]] = field(default_factory=list)

    def move(self, state: S, kind: str, message: str = "", *, other: Promotion | None = None,
             **detail: Any) -> None:
        target = other or self.p
        if state not in self.table[target.state].next:
            raise IllegalTransition(f"promotion {target.id}: {target.state} -> {state} is not in the table")
        move(self.s, target, state, kind, message, at=self.now, **detail)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Work that must not run inside the step's transaction (a merge commits on its own)."""
        self.effects.append(fn)

    def overdue(self, limit: timedelta, since: datetime | None = None) -> bool:
        return self.now - (since or self.p.state_since) > limit


def deploy_branch(p: Promotion) -> str:
    return f"deploy/{p.app}/{p.version}/{p.env}"


def rendered_path(p: Promotion) -> str:
    return f"rendered/{p.app}.yaml"


def merges_itself(env: Environment) -> bool:
    """CD merges once the branch's rules are met: at once with auto_merge, else when the required
    approvals are in. An environment with neither waits for a person to merge."""
    return env.auto_merge or env.approvals.required > 0


# --- pending -------------------------------------------------------------------------------------
def on_pending(ctx: Step) -> None:
    """Render for the environment, commit to `deploy/<app>/<version>/<env>`, open the PR to `env/<env>`
    as the change's author (so "no self-approval" keeps them from approving it), with the live diff
    and the risk rules it trips; when the environment already runs exactly this, skip the PR (the
    unchanged path). A version marked bad is refused unless a person started it."""
    p, env, forge = ctx.p, ctx.env, ctx.ports.forge
    if refuse_bad_version(ctx):
        return
    supersede_older(ctx)
    rendered = ctx.ports.renderer.render(ctx.s, p, env)
    base = forge.branch_tip(ctx.s, p.gitops_repo, env.branch)
    branch = deploy_branch(p)
    head = forge.write_branch(ctx.s, p.gitops_repo, branch, rendered.files,
                              f"Deploy {p.app} {p.version} to {p.env}\n\nSource: {p.source_repo}@{p.source_commit}\n",
                              base=base, replace_dirs=(f"source/{p.app}",))
    p.deploy_branch = branch
    if base is not None and forge.same_tree(ctx.s, p.gitops_repo, head, base):
        p.merge_commit = base
        ctx.move(S.MERGED, "unchanged", f"{p.env} already runs exactly this; waiting for the agent")
        return
    stats = forge.diffstat(ctx.s, p.gitops_repo, base or head, head)
    raw = forge.read_file(ctx.s, p.gitops_repo, base, rendered_path(p)) if base else None
    previous = raw.decode() if raw else None
    p.risk = governance.assess_risk(env, rendered.manifests, previous,
                                    forge.trailers(ctx.s, p.source_repo, p.source_commit), p.security_update)
    p.extra_approvals = env.risk.extra_approvals if p.risk and env.risk else 0
    diff = ctx.ports.live_diff.diff(env.cluster, rendered.manifests, previous)
    forge.post_status(ctx.s, p.gitops_repo, head, state=diff.state, context=DIFF_CHECK,
                      description=diff.summary[:900])
    number = forge.open_pr(ctx.s, p.gitops_repo, author=p.author, source=branch, target=env.branch,
                           title=f"Deploy {p.app} {p.version} to {p.env}",
                           body=pr_body(p, ctx.ports.base_url, stats) + risk_note(p, env) + "\n" + diff.markdown)
    p.pr_number = number
    post_gate(ctx, head, governance.merge_blocks(ctx.s, p, env, 0, ctx.now))
    ctx.move(S.PR_OPEN, "pr_opened", f"PR #{number} to {env.branch}", pr=number, risk=p.risk)
    report_source(ctx, "pending", f"PR #{number} opened for {p.env}")


def risk_note(p: Promotion, env: Environment) -> str:
    if not p.risk:
        return ""
    rules = "\n".join(f"- `{r['rule']}`: {r['reason']}" for r in p.risk)
    return (f"\n**Risky change: {env.approvals.required + p.extra_approvals} approval(s) required "
            f"({p.extra_approvals} more than {env.name} usually needs)**, asked for by:\n{rules}\n")


def post_gate(ctx: Step, head: str, blocks: list[governance.Block]) -> None:
    """The ``conveyor/cd/gate`` check on a GitOps PR head, posted when it changes."""
    state, description = governance.gate_status(blocks)
    current = ctx.ports.forge.statuses(ctx.s, ctx.p.gitops_repo, head).get(GATE_CHECK)
    if current != (state, description):
        ctx.ports.forge.post_status(ctx.s, ctx.p.gitops_repo, head, state=state, context=GATE_CHECK,
                                    description=description)


def refuse_bad_version(ctx: Step) -> bool:
    """A version that failed and was rolled back is never promoted automatically again."""
    p = ctx.p
    bad = governance.bad_version(ctx.s, p.app, p.version) if p.started_by is None else None
    if bad is None:
        return False
    if p.pr_number and ctx.ports.forge.pull(ctx.s, p.gitops_repo, p.pr_number).state == "open":
        ctx.ports.forge.close(ctx.s, p.gitops_repo, p.pr_number, f"{p.version} is marked bad: {bad.reason}")
    ctx.move(S.REFUSED, "refused", f"{p.app} {p.version} is marked bad ({bad.reason}); it is promoted only by "
                                   "hand", rule="hold.bad-version")
    return True


def pr_body(p: Promotion, base_url: str, files: list[tuple[str, int | None, int | None]]) -> str:
    stat = "\n".join(f"- `{path}` +{a if a is not None else 'bin'} -{d if d is not None else 'bin'}"
                     for path, a, d in files)
    return (
        f"Deploy **{p.app} {p.version}** to **{p.env}**.\n\n"
        f"- image: `{p.image}:{p.image_tag}@{p.image_digest}`\n"
        f"- source: `{p.source_repo}` commit `{p.source_commit}` by {p.author}\n"
        f"- CI run: {base_url}/api/v1/runs/{p.ci_run}\n"
        + (f"- **security update**: {p.security_update}\n" if p.security_update else "") + "\n"
        f"Rendered changes:\n{stat or '- (none)'}\n"
    )


def supersede_older(ctx: Step) -> None:
    """Older versions of the app still waiting to merge into this environment will never be wanted."""
    p = ctx.p
    older = ctx.s.execute(select(Promotion).where(
        Promotion.app == p.app, Promotion.env == p.env, Promotion.id < p.id,
        Promotion.state.in_((S.PENDING, S.PR_OPEN)))).scalars()
    for o in older:
        if o.pr_number and ctx.ports.forge.pull(ctx.s, o.gitops_repo, o.pr_number).state == "open":
            ctx.ports.forge.close(ctx.s, o.gitops_repo, o.pr_number, f"superseded by {p.version}")
        ctx.move(S.SUPERSEDED, "superseded", f"superseded by {p.version} (promotion {p.id})", other=o)


# --- pr_open -------------------------------------------------------------------------------------
def on_pr_open(ctx: Step) -> None:
    """Wait for the merge; keep the `conveyor/cd/gate` check current (freeze windows, the stop switch,
    holds, one deployment per branch, extra approvals for risky changes). CD merges once the gate
    and the branch's rules are met (a durable `merge_requested`, then the merge after the step
    commits). A closed PR abandons it; waiting past `approvals.expire_after` expires it (PR closed);
    a version marked bad is refused unless a person started it."""
    p, env = ctx.p, ctx.env
    pr = ctx.ports.forge.pull(ctx.s, p.gitops_repo, p.pr_number or 0)
    if pr.state == "merged":
        p.merge_commit = pr.merge_commit
        ctx.move(S.MERGED, "merged", f"PR #{pr.number} merged by {pr.merged_by}", approvers=list(pr.approvers))
        return
    if pr.state == "closed":
        ctx.move(S.ABANDONED, "abandoned", f"PR #{pr.number} was closed without merging")
        return
    if pr.state != "open" or refuse_bad_version(ctx):
        return
    expire = env.approvals.expire_after
    if expire is not None and ctx.overdue(timedelta(seconds=expire)):
        why = f"no merge within {expire}s ({env.name}'s approvals.expire_after); approvals: {len(pr.approvers)}"
        ctx.ports.forge.close(ctx.s, p.gitops_repo, pr.number, f"expired: {why}")
        ctx.move(S.EXPIRED, "expired", why, rule="approvals.expired")
        return
    blocks = governance.merge_blocks(ctx.s, p, env, len(pr.approvers), ctx.now)
    post_gate(ctx, pr.head_sha, blocks)
    if not blocks and merges_itself(env) and pr.mergeable:
        request_merge(ctx, pr)


def request_merge(ctx: Step, pr: PullView) -> None:
    """The durable intent (an event in this step's transaction), then the merge after it commits.

    ``Forge.merge`` runs its own units of work (intent, compare-and-swap of the branch, record), so
    it cannot share the step's transaction. If the process dies after the intent, the next step finds
    the PR still open and merges again; if it dies after the merge, the next step finds it merged.
    """
    repo, number = ctx.p.gitops_repo, pr.number
    note(ctx.s, ctx.p, "merge_requested", f"CD merges PR #{number}: every rule of {ctx.env.branch} is met", pr=number)
    ctx.after_commit(lambda: ctx.ports.forge.merge(repo, number))


# --- merged --------------------------------------------------------------------------------------
def on_merged(ctx: Step) -> None:
    """Wait for the agent's `conveyor/deploy/<cluster>/...` status on a commit containing the merge;
    failure, or silence past 10 minutes, fails the promotion and opens the revert PR."""
    p, env = ctx.p, ctx.env
    verdict = ctx.ports.agents.verdict(ctx.s, p.gitops_repo, env.branch, p.merge_commit or "", env.cluster)
    if verdict is None:
        if ctx.overdue(APPLY_DEADLINE):
            fail_and_roll_back(ctx, f"the agent of '{env.cluster}' did not report within "
                                    f"{int(APPLY_DEADLINE.total_seconds())}s")
        return
    if verdict.ok:
        p.applied_commit = verdict.commit
        ctx.move(S.APPLIED, "applied", f"applied and healthy on {env.cluster}: {verdict.description}",
                 commit=verdict.commit)
    else:
        fail_and_roll_back(ctx, f"apply failed on {env.cluster}: {verdict.description}")


# --- applied -------------------------------------------------------------------------------------
def on_applied(ctx: Step) -> None:
    """Verify the endpoint; success soaks (when the environment sets `soak`) or promotes to the
    environments whose `after` is this one. Failing past the verify timeout opens the revert PR."""
    p, env = ctx.p, ctx.env
    passed, detail = verify(ctx)
    if passed and env.soak is not None:
        p.soak_restarts = ctx.ports.probe.restarts(env.cluster, env.namespace(p.app))
        ctx.move(S.SOAKING, "soaking", f"{detail}; soaking for {env.soak.duration}s before the next environments",
                 restarts=p.soak_restarts)
    elif passed:
        finish_verified(ctx, detail)
    elif ctx.overdue(timedelta(seconds=env.verify.timeout if env.verify else 120)):
        fail_and_roll_back(ctx, f"verification failed: {detail}")


def finish_verified(ctx: Step, detail: str) -> None:
    p = ctx.p
    ctx.move(S.VERIFIED, "verified", detail)
    report_source(ctx, "success", f"verified in {p.env}")
    for nxt in next_environments(ctx.envs, ctx.env.name):
        create_promotion(ctx.s, release_of(p), nxt, p.gitops_repo, promoted_from=p.id)


# --- soaking -------------------------------------------------------------------------------------
def on_soaking(ctx: Step) -> None:
    """Stay healthy for the environment's soak time (the agent's health, restarts within the
    threshold), then verify the endpoint again and promote; any failure rolls back."""
    p, env = ctx.p, ctx.env
    soak = env.soak
    verdict = ctx.ports.agents.verdict(ctx.s, p.gitops_repo, env.branch, p.merge_commit or "", env.cluster)
    if verdict is not None and not verdict.ok:
        fail_and_roll_back(ctx, f"unhealthy during the soak on {env.cluster}: {verdict.description}")
        return
    if soak is not None and p.soak_restarts is not None:
        now = ctx.ports.probe.restarts(env.cluster, env.namespace(p.app))
        if now is not None and now - p.soak_restarts > soak.max_restarts:
            fail_and_roll_back(ctx, f"{now - p.soak_restarts} container restart(s) during the soak "
                                    f"(at most {soak.max_restarts})")
            return
    if soak is not None and not ctx.overdue(timedelta(seconds=soak.duration)):
        return
    passed, detail = verify(ctx)
    if passed:
        finish_verified(ctx, f"healthy through the soak; {detail}")
    else:
        fail_and_roll_back(ctx, f"verification at the end of the soak failed: {detail}")


def verify(ctx: Step) -> tuple[bool, str]:
    v = ctx.env.verify
    if v is None:
        return True, "no verification configured"
    result = ctx.ports.probe.probe(ctx.env.cluster, ctx.env.namespace(ctx.p.app), v.service or ctx.p.app, v.port,
                                   v.path, v.via)
    return judge(v, result)


def fail_and_roll_back(ctx: Step, reason: str) -> None:
    """The change failed after its merge: open the revert PR (rolling_back), or end as failed when
    nothing was merged by this promotion (the unchanged path) and rollback_failed when the revert
    cannot be opened."""
    p, forge = ctx.p, ctx.ports.forge
    report_source(ctx, "failure", f"{p.env}: {reason}")
    pr = forge.pull(ctx.s, p.gitops_repo, p.pr_number) if p.pr_number else None
    if pr is None or pr.state != "merged":
        ctx.move(S.FAILED, "failed", reason)
        return
    mark_failed(p, reason, ctx.now)
    note(ctx.s, p, "failed", reason)
    try:
        revert = forge.revert(ctx.s, p.gitops_repo, pr.number)
    except ConveyorError as exc:
        ctx.move(S.ROLLBACK_FAILED, "rollback_failed", f"the revert PR could not be opened: {exc.detail}")
        return
    forge.post_status(ctx.s, p.gitops_repo, revert.head_sha, state="success", context=DIFF_CHECK,
                      description=f"rollback of {p.app} {p.version} in {p.env}")
    forge.post_status(ctx.s, p.gitops_repo, revert.head_sha, state="success", context=GATE_CHECK,
                      description="a rollback: no delivery rule holds it back")
    p.rollback_pr_number = revert.number
    ctx.move(S.ROLLING_BACK, "rollback_opened", f"revert PR #{revert.number}", pr=revert.number)


# --- rolling_back --------------------------------------------------------------------------------
def on_rolling_back(ctx: Step) -> None:
    """Wait for the revert's merge (CD merges it under the same rules), the agent, and a passing
    verification of the previous version."""
    p, env = ctx.p, ctx.env
    pr = ctx.ports.forge.pull(ctx.s, p.gitops_repo, p.rollback_pr_number or 0)
    if pr.state in ("open", "merging"):
        if pr.state == "open" and merges_itself(env) and pr.mergeable:
            request_merge(ctx, pr)
        return
    if pr.state == "closed":
        end_rollback(ctx, S.ROLLBACK_FAILED, "rollback_abandoned", f"rollback PR #{pr.number} was closed")
        return
    p.rollback_merge_commit = pr.merge_commit
    verdict = ctx.ports.agents.verdict(ctx.s, p.gitops_repo, env.branch, pr.merge_commit or "", env.cluster)
    overdue = ctx.overdue(APPLY_DEADLINE, pr.merged_at)
    if verdict is None:
        if overdue:
            end_rollback(ctx, S.ROLLBACK_FAILED, "rollback_failed",
                         f"the agent of '{env.cluster}' did not report on the rollback")
        return
    if not verdict.ok:
        end_rollback(ctx, S.ROLLBACK_FAILED, "rollback_failed", f"rollback apply failed: {verdict.description}")
        return
    previous = ctx.s.execute(select(Promotion.version).where(
        Promotion.app == p.app, Promotion.env == p.env, Promotion.state == S.VERIFIED, Promotion.id < p.id)
        .order_by(Promotion.id.desc()).limit(1)).scalar_one_or_none()
    if previous is None:
        end_rollback(ctx, S.ROLLED_BACK, "rolled_back", f"removed from {p.env}: no earlier version ran there")
        return
    passed, detail = verify(ctx)
    if passed:
        end_rollback(ctx, S.ROLLED_BACK, "rolled_back", f"{previous} restored and verified: {detail}")
    elif overdue:
        end_rollback(ctx, S.ROLLBACK_FAILED, "rollback_failed", f"{previous} restored but verification fails: {detail}")


def end_rollback(ctx: Step, state: S, kind: str, message: str) -> None:
    """After a failure and its rollback, the version is bad for the app and the environment held:
    the next build does not walk into the same failure without a decision."""
    p = ctx.p
    ctx.move(state, kind, message)
    governance.mark_bad(ctx.s, p, p.failure_reason or message)
    governance.hold(ctx.s, p.app, p.env, f"{p.version} failed and was rolled back: {p.failure_reason or message}",
                    by="conveyor-delivery", promotion=p.id)


def report_source(ctx: Step, state: str, description: str) -> None:
    """Deployment progress as a commit status on the application commit (`conveyor/cd/<env>`)."""
    p = ctx.p
    try:
        ctx.ports.forge.post_status(ctx.s, p.source_repo, p.source_commit, state=state, context=cd_context(p.env),
                                    description=description[:900])
    except ConveyorError as exc:
        note(ctx.s, p, "report_failed", exc.detail)

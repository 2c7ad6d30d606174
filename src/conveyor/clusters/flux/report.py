"""Turning one Flux event into a ``conveyor/deploy/<cluster>/<sync>`` commit status, or into nothing.

The status goes on the GitOps commit of the event's ``revision``, posted as the cluster's agent
identity (``agent-<cluster>``), exactly as Conveyor's own agent would post it, so delivery waits
for Flux the way it waits for its own agent. What is dropped, and why:

- events that stand for no state (``events.state_of``), or whose revision is not a commit of a
  GitOps repository on a branch that still contains it;
- repeats and re-applies (``events.TRANSITIONS``): Flux re-sends success every interval;
- events for a revision older than the branch tip when a newer commit on the branch already has a
  status of this context: a late failure of an old revision must not undo a newer verdict
  (delivery reads the newest status between its merge and the tip).

Every event, posted or not, becomes the cluster's last report for its object (``FluxReport``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.clusters.flux.events import TRANSITIONS, DeployState, FluxEvent, description, parse_revision, state_of
from conveyor.clusters.models import FluxReport
from conveyor.core import Principal, Settings, utcnow
from conveyor.forge import BareRepo, Repository, bare, combined_status, list_repos, post_status

DEPLOY_PREFIX = "conveyor/deploy/"
NEWER_COMMITS_CHECKED = 500


@dataclass(frozen=True)
class Outcome:
    posted: bool
    detail: str
    repo: str = ""
    sha: str = ""
    context: str = ""
    state: str = ""

    def to_json(self) -> dict[str, str | bool]:
        return {"posted": self.posted, "detail": self.detail, "repo": self.repo, "sha": self.sha,
                "context": self.context, "state": self.state}


def _locate(session: Session, settings: Settings, event: FluxEvent, sha: str) -> tuple[Repository, BareRepo] | None:
    wanted = event.metadata.get("repo")
    for repo in list_repos(session):
        if repo.kind != "gitops" or (wanted and repo.name != wanted):
            continue
        git = bare(settings, repo)
        if git.has_commit(sha):
            return repo, git
    return None


def _current(session: Session, repo: Repository, sha: str, context: str) -> DeployState | None:
    st = combined_status(session, repo, sha).by_context().get(context)
    if st is None:
        return None
    return DeployState.FAILURE if st.state == "error" else DeployState(st.state)


def _newer_verdict(session: Session, repo: Repository, git: BareRepo, sha: str, tip: str, context: str) -> str | None:
    newer = git.run("rev-list", "--ancestry-path", f"--max-count={NEWER_COMMITS_CHECKED}", f"{sha}..{tip}").stdout
    for commit in newer.split():
        if context in combined_status(session, repo, commit).by_context():
            return commit
    return None


def apply_event(session: Session, settings: Settings, agent: Principal, cluster: str, event: FluxEvent) -> Outcome:
    outcome = _decide_and_post(session, settings, agent, cluster, event)
    _remember(session, cluster, event, outcome)
    return outcome


def _decide_and_post(session: Session, settings: Settings, agent: Principal, cluster: str,
                     event: FluxEvent) -> Outcome:
    state = state_of(event)
    if state is None:
        return Outcome(False, f"a {event.kind} event with reason {event.reason} maps to no deploy status")
    parsed = parse_revision(event.revision)
    if parsed is None or not parsed[0]:
        return Outcome(False, f"no branch@sha1:<commit> revision in the event ('{event.revision}')")
    branch, sha = parsed
    context = f"{DEPLOY_PREFIX}{cluster}/{event.sync}"
    found = _locate(session, settings, event, sha)
    if found is None:
        repo_name = event.metadata.get("repo")
        where = f"GitOps repository '{repo_name}'" if repo_name else "any GitOps repository"
        return Outcome(False, f"commit {sha[:12]} is not in {where}", sha=sha, context=context)
    repo, git = found
    base = Outcome(False, "", repo.name, sha, context, state.value)
    tip = git.branch_tip(branch)
    if tip is None or (tip != sha and not git.is_ancestor(sha, tip)):
        return _with(base, f"{sha[:12]} is not on branch '{branch}' of '{repo.name}' any more")
    if tip != sha and (newer := _newer_verdict(session, repo, git, sha, tip, context)) is not None:
        return _with(base, f"{sha[:12]} is older than {newer[:12]}, which already has a {context} status")
    current = _current(session, repo, sha, context)
    if not TRANSITIONS[(current, state)]:
        return _with(base, f"{context} on {sha[:12]} is already {current}: dropped as a repeat")
    post_status(session, settings, agent, repo, sha, state=state.value, context=context,
                description=description(event, state), target_url=f"{settings.base_url}/clusters#cl-{cluster}")
    return Outcome(True, f"posted {state.value}", repo.name, sha, context, state.value)


def _with(base: Outcome, detail: str) -> Outcome:
    return Outcome(False, detail, base.repo, base.sha, base.context, base.state)


def _remember(session: Session, cluster: str, event: FluxEvent, outcome: Outcome) -> None:
    row = session.execute(select(FluxReport).where(
        FluxReport.cluster == cluster, FluxReport.kind == event.kind[:64],
        FluxReport.namespace == event.namespace[:253], FluxReport.name == event.name[:253])).scalar_one_or_none()
    if row is None:
        row = FluxReport(cluster=cluster, kind=event.kind[:64], namespace=event.namespace[:253], name=event.name[:253])
        session.add(row)
    row.controller, row.severity, row.reason = event.controller[:64], event.severity[:16], event.reason[:128]
    row.message, row.revision = event.message[:4000], event.revision[:300]
    row.outcome, row.reported_at = outcome.detail[:300], utcnow()
    session.flush()


def last_reports(session: Session, cluster: str | None = None) -> list[FluxReport]:
    q = select(FluxReport).order_by(FluxReport.cluster, FluxReport.kind, FluxReport.namespace, FluxReport.name)
    if cluster is not None:
        q = q.where(FluxReport.cluster == cluster)
    return list(session.execute(q).scalars())

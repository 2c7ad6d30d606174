"""From the forge's events to queued runs: PR opened/updated -> ``pr``; push to the default branch -> ``ci``
(at once, or collected for a batched run when the pipeline says ``trigger: batch``).

Handlers run inside the outbox transaction and may see an event twice; the run's ``trigger_key``
(event id + pipeline) makes the second delivery a no-op.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import ConveyorError, Event, NotFound, Settings, utcnow
from conveyor.core.yamlspec import decode
from conveyor.forge import Repository, bare, get_repo, post_status
from conveyor.forge.git import ZERO
from conveyor.pipelines import queue
from conveyor.pipelines.identity import SERVICE_PRINCIPAL
from conveyor.pipelines.models import ACTIVE, CadenceState, Run
from conveyor.pipelines.runs import is_deployable
from conveyor.pipelines.spec import PIPELINE_FILE, PipelineSpec, SpecError, Trigger, parse_pipeline

log = logging.getLogger(__name__)

def pipeline_at(settings: Settings, repo: Repository, sha: str, pipeline: str) -> PipelineSpec | None | bool:
    """The commit's ``pipeline``: its spec, None when it has none, True when the file is invalid
    (the run is queued anyway and fails visibly at its setup step)."""
    p = bare(settings, repo).read_file(sha, PIPELINE_FILE)
    if p is None:
        return None
    try:
        return parse_pipeline(decode(p, PIPELINE_FILE)).get(pipeline)
    except SpecError:
        return True


def supersede(session: Session, repo_id: int, pr_number: int, keep_sha: str, actor: str) -> None:
    """Cancel the PR's runs for heads it no longer has."""
    old = session.execute(
        select(Run).where(Run.repo_id == repo_id, Run.pr_number == pr_number, Run.pipeline == "pr",
                          Run.state.in_(ACTIVE), Run.sha != keep_sha)
    ).scalars()
    for run in old:
        queue.request_cancel(session, run, actor)
        run.message = f"superseded by {keep_sha[:12]}"


def collect(session: Session, repo: Repository, sha: str, ref: str, actor: str) -> None:
    """A merge to a batched CI pipeline's branch waits for its batch (see ``cadence_runs``)."""
    state = session.get(CadenceState, repo.id)
    if state is None:
        state = CadenceState(repo_id=repo.id)
        session.add(state)
    if state.pending_tip is None:
        # The batch's clocks start now: its window, and the schedule (a time that passed before this
        # merge, with nothing collected, does not start it at once).
        state.pending_since = state.checked_at = utcnow()
    state.pending_tip, state.pending_ref, state.pending_actor = sha, ref, actor


def _on_push(session: Session, settings: Settings, event: Event, repo: Repository) -> None:
    p = event.payload
    after = str(p.get("after") or ZERO)
    if p.get("deleted") or not p.get("default_branch") or after == ZERO:
        return
    spec = pipeline_at(settings, repo, after, "ci")
    if spec is None:
        return
    if isinstance(spec, PipelineSpec) and spec.trigger == Trigger.BATCH:
        collect(session, repo, after, str(p.get("ref", "")), event.actor)
        return
    labels = spec.runs_on if isinstance(spec, PipelineSpec) else ()
    queue.enqueue(session, repo_id=repo.id, repo_name=repo.name, pipeline="ci", sha=after, ref=str(p.get("ref", "")),
                  trigger="push", actor=event.actor, trigger_key=f"event:{event.id}:ci", labels=labels,
                  deployable=is_deployable(session, settings, repo.name, "ci", after))


def make_handler(settings: Settings):  # type: ignore[no-untyped-def]
    def handle(session: Session, event: Event) -> None:
        p = event.payload
        try:
            repo = get_repo(session, str(p.get("repo", "")))
        except NotFound:
            return  # deleted since
        if event.topic == "push":
            _on_push(session, settings, event, repo)
            return
        head = str(p.get("head_sha") or "")
        number = p.get("number")
        if not head or not isinstance(number, int):
            return
        supersede(session, repo.id, number, head, "conveyor-pipelines")
        spec = pipeline_at(settings, repo, head, "pr")
        if spec is None:
            return
        queue.enqueue(session, repo_id=repo.id, repo_name=repo.name, pipeline="pr", sha=head,
                      ref=f"refs/heads/{p.get('source_branch', '')}", trigger=event.topic, actor=event.actor,
                      pr_number=number, trigger_key=f"event:{event.id}:pr",
                      labels=spec.runs_on if isinstance(spec, PipelineSpec) else ())

    return handle


def make_give_up(settings: Settings):  # type: ignore[no-untyped-def]
    """A push or PR event that could not start its run ends visibly: an error check on its commit."""

    def give_up(session: Session, event: Event, error: str) -> None:
        p = event.payload
        sha = str(p.get("head_sha") or p.get("after") or "")
        pipeline = "ci" if event.topic == "push" else "pr"
        if event.topic == "push" and not p.get("default_branch"):
            return
        try:
            repo = get_repo(session, str(p.get("repo", "")))
            post_status(session, settings, SERVICE_PRINCIPAL, repo, sha, state="error", context=f"conveyor/{pipeline}",
                        description=f"could not start the {pipeline} pipeline: {error}"[:1000])
        except ConveyorError:
            return  # the repository or commit is gone: nothing left to tell

    return give_up

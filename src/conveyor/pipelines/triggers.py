"""From the forge's events to queued runs: PR opened/updated -> ``pr``; push to the default branch -> ``ci``.

Handlers run inside the outbox transaction and may see an event twice; the run's ``trigger_key``
(event id + pipeline) makes the second delivery a no-op.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Settings
from conveyor.core.models import Event
from conveyor.core.yamlspec import decode
from conveyor.forge import bare, get_repo
from conveyor.forge.git import ZERO
from conveyor.forge.models import Repository
from conveyor.pipelines import queue
from conveyor.pipelines.models import ACTIVE, Run
from conveyor.pipelines.spec import PIPELINE_FILE, SpecError, parse_pipeline

log = logging.getLogger(__name__)

TOPICS = ("push", "pull_request.opened", "pull_request.synchronize", "pull_request.reopened")


def wants(settings: Settings, repo: Repository, sha: str, pipeline: str) -> bool:
    """Whether the commit defines ``pipeline``. An invalid file counts: its run fails visibly."""
    raw = bare(settings, repo).read_file(sha, PIPELINE_FILE)
    if raw is None:
        return False
    try:
        return pipeline in parse_pipeline(decode(raw, PIPELINE_FILE))
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


def make_handler(settings: Settings):  # type: ignore[no-untyped-def]
    def handle(session: Session, event: Event) -> None:
        p = event.payload
        repo_name = str(p.get("repo", ""))
        try:
            repo = get_repo(session, repo_name)
        except Exception:
            return  # deleted since
        key_prefix = f"event:{event.id}"
        if event.topic == "push":
            after = str(p.get("after") or ZERO)
            if p.get("deleted") or not p.get("default_branch") or after == ZERO:
                return
            if not wants(settings, repo, after, "ci"):
                return
            queue.enqueue(session, repo_id=repo.id, repo_name=repo.name, pipeline="ci", sha=after,
                          ref=str(p.get("ref", "")), trigger="push", actor=event.actor,
                          trigger_key=f"{key_prefix}:ci")
            return
        head = str(p.get("head_sha") or "")
        number = p.get("number")
        if not head or not isinstance(number, int):
            return
        supersede(session, repo.id, number, head, "conveyor-pipelines")
        if not wants(settings, repo, head, "pr"):
            return
        queue.enqueue(session, repo_id=repo.id, repo_name=repo.name, pipeline="pr", sha=head,
                      ref=f"refs/heads/{p.get('source_branch', '')}", trigger=event.topic, actor=event.actor,
                      pr_number=number, trigger_key=f"{key_prefix}:pr")

    return handle

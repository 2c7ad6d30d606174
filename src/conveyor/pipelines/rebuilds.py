"""Rebuilds for security updates: a base image got a new digest, so the apps built on it are built again.

The registry records ``registry.base.updated`` when a tag that images were built on moves (a cache
refresh, ``conveyor image base --refresh``, a push), naming the image repositories whose newest image
was built on an older digest of it and the source repository each ``apps/`` repository belongs to.
For each of those, CI runs on the tip of its default branch, the way a merge would start it: at once,
or collected into the next batch when its pipeline has a cadence (``trigger: batch``, ``schedule``).
The run carries ``security_update`` (base, old and new digest): its commit status says so, and its
``pipeline.ci.succeeded`` event hands it to delivery, whose risk rule treats the release as a
security-related change. A run of a commit that is not on the protected default branch is not
deployable, as ever.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from conveyor.core import Event, NotFound, Settings
from conveyor.forge import bare, get_repo
from conveyor.pipelines import queue
from conveyor.pipelines.models import CadenceState
from conveyor.pipelines.runs import is_deployable
from conveyor.pipelines.spec import PipelineSpec, Trigger

log = logging.getLogger(__name__)
TRIGGER = "base-image"


def label(p: dict[str, Any]) -> dict[str, Any]:
    base = f"{p['repository']}:{p['tag']}"
    return {"base": base, "from": p.get("old_digest"), "to": p.get("new_digest"),
            "reason": f"base image {base} changed to {str(p.get('new_digest'))[:19]}"}


def _rebuild(session: Session, settings: Settings, event: Event, source_repo: str, security: dict[str, Any]) -> None:
    from conveyor.pipelines.triggers import pipeline_at

    try:
        repo = get_repo(session, source_repo)
    except NotFound:
        return
    tip = bare(settings, repo).branch_tip(repo.default_branch)
    if tip is None:
        return
    spec = pipeline_at(settings, repo, tip, "ci")
    if spec is None:
        return
    ref = f"refs/heads/{repo.default_branch}"
    if isinstance(spec, PipelineSpec) and spec.trigger == Trigger.BATCH:
        from conveyor.pipelines.triggers import collect

        collect(session, repo, tip, ref, event.actor)
        state = session.get(CadenceState, repo.id)
        if state is not None:
            state.pending_security = security
        log.info("security rebuild of %s collected into its next batch", repo.name)
        return
    queue.enqueue(session, repo_id=repo.id, repo_name=repo.name, pipeline="ci", sha=tip, ref=ref, trigger=TRIGGER,
                  actor=event.actor, trigger_key=f"base:{event.id}:{repo.id}",
                  labels=spec.runs_on if isinstance(spec, PipelineSpec) else (),
                  deployable=is_deployable(session, settings, repo.name, "ci", tip), security_update=security)


def make_handler(settings: Settings):  # type: ignore[no-untyped-def]
    def handle(session: Session, event: Event) -> None:
        p = event.payload
        security = label(p)
        for source in sorted({str(i["source_repo"]) for i in p.get("images", []) if i.get("source_repo")}):
            _rebuild(session, settings, event, source, security)

    return handle

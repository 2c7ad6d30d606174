"""Starting batched CI runs when their batch window has passed or their schedule fires.

A batch builds the tip of the default branch and lists every commit since the last batched run
(``git rev-list last..tip``, oldest first), so delivery can count lead time from each of them. A
scheduled time with nothing collected starts nothing.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from conveyor.core import Database, Settings, utcnow
from conveyor.forge import bare, repo_by_id
from conveyor.pipelines import queue
from conveyor.pipelines.cadence import previous_fire
from conveyor.pipelines.models import CadenceState
from conveyor.pipelines.runs import is_deployable
from conveyor.pipelines.spec import PipelineSpec


def _due(spec: PipelineSpec, state: CadenceState) -> bool:
    now = utcnow()
    if spec.batch_window is not None and state.pending_since is not None and \
            now - state.pending_since >= timedelta(seconds=spec.batch_window):
        return True
    if spec.schedule:
        fire = previous_fire(spec.schedule, spec.timezone, now)
        return state.checked_at is None or fire > state.checked_at
    return False


def start_due(db: Database, settings: Settings) -> int:
    from conveyor.pipelines.triggers import pipeline_at

    started = 0
    with db.session() as s:
        for state in s.execute(select(CadenceState).where(CadenceState.pending_tip.is_not(None))).scalars().all():
            repo = repo_by_id(s, state.repo_id)
            tip = state.pending_tip
            if repo is None or tip is None:
                continue
            spec = pipeline_at(settings, repo, tip, "ci")
            if not isinstance(spec, PipelineSpec) or not _due(spec, state):
                continue
            git = bare(settings, repo)
            base = [f"^{state.last_built}"] if state.last_built and git.has_commit(state.last_built) else ["-n", "500"]
            commits = list(reversed(git.run("rev-list", tip, *base).stdout.split())) or [tip]
            queue.enqueue(s, repo_id=repo.id, repo_name=repo.name, pipeline="ci", sha=tip, ref=state.pending_ref,
                          trigger="batch" if spec.batch_window else "schedule", actor=state.pending_actor or "system",
                          trigger_key=f"batch:{repo.id}:{tip}", labels=spec.runs_on, commits=commits,
                          deployable=is_deployable(s, settings, repo.name, "ci", tip),
                          security_update=state.pending_security)
            state.last_built, state.pending_tip, state.pending_since = tip, None, None
            state.pending_security = None
            state.checked_at = utcnow()
            started += 1
    return started

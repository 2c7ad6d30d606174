"""The server's side of a run in flight: what a runner is handed when it claims a run, and what it
reports back (steps, logs, artifacts, the result). Runners reach these only through
``runner_api.py``; nothing here runs a step.

What a claim hands over is exactly what the run may have: a run token narrowed to the run
(``identity.run_scope``), the secrets the run's kind may see (``SecretScope``), and whether the
repository's non-PR pipelines may run steps on the runner's host. A run is *deployable* when it is
a CI run of a commit on the protected default branch; only then does its token push images, under
the app's own registry repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conveyor.core import Conflict, Forbidden, Settings, record, utcnow
from conveyor.core.settings_store import get_setting, put_setting
from conveyor.forge import bare, get_repo
from conveyor.pipelines import artifacts, secrets
from conveyor.pipelines.config import oldest_cluster_version, run_url
from conveyor.pipelines.identity import SERVICE_USER, issue_run_token, revoke_run_tokens
from conveyor.pipelines.models import Artifact, LogChunk, Run, Step
from conveyor.pipelines.queue import run_payload
from conveyor.pipelines.spec import APP_FILE, SpecError, parse_app
from conveyor.registry import bind_app, list_tags, resolve_tag

HOST_EXECUTION_KEY = "pipelines.host-execution-repos"
STEP_STATES = ("pending", "running", "success", "failure", "cancelled", "skipped")


def host_execution_repos(session: Session) -> list[str]:
    value = get_setting(session, HOST_EXECUTION_KEY, [])
    return [str(r) for r in value] if isinstance(value, list) else []


def set_host_execution_repos(session: Session, repos: list[str], actor: str) -> None:
    put_setting(session, HOST_EXECUTION_KEY, sorted(set(repos)), actor)
    record(session, actor=actor, action="pipeline.host_execution_changed", target="pipelines",
           payload={"repos": sorted(set(repos))})


def is_deployable(session: Session, settings: Settings, repo_name: str, pipeline: str, sha: str) -> bool:
    """A CI run of a commit that is on the repository's protected default branch."""
    if pipeline != "ci":
        return False
    repo = get_repo(session, repo_name)
    if not any(p.branch == repo.default_branch for p in repo.protections):
        return False
    git = bare(settings, repo)
    tip = git.branch_tip(repo.default_branch)
    return tip is not None and git.is_ancestor(sha, tip)


def push_scope(session: Session, settings: Settings, run: Run) -> tuple[str, ...]:
    """Where the run's token may push: the app's repository under ``apps/``, for deployable runs only."""
    if not run.deployable:
        return ()
    data = bare(settings, get_repo(session, run.repo_name)).read_file(run.sha, APP_FILE)
    if data is None:
        return ()
    try:
        image = parse_app(data.decode("utf-8")).image
    except (SpecError, UnicodeDecodeError):
        return ()
    if not image.startswith("apps/"):
        return ()
    owner = bind_app(session, image, run.repo_name)
    if owner is not None:
        run.message = f"{image} belongs to {owner}'s CI; this run may not push it (rule registry.app-owner)"
        return ()
    return (image,)


def signing_claims(session: Session, settings: Settings, run: Run, repository: str, digest: str) -> dict[str, str]:
    """What a signature of ``repository@digest`` by this run says, once it is sure the run built it: a
    deployable CI run, its app's repository, and the image tagged with the run's own build number
    (``<version>-<number>``; release tags never move, so no other run can have pushed that tag)."""
    if not run.deployable or run.pipeline != "ci":
        raise Forbidden("only deployable CI runs get their images signed", rule="sign.not-deployable")
    if repository not in push_scope(session, settings, run):
        raise Forbidden(f"run {run.id} does not push {repository}", rule="sign.scope")
    tags = [t for t in list_tags(session, repository) if t.endswith(f"-{run.number}")]
    if not any(resolve_tag(session, repository, t) == digest for t in tags):
        raise Conflict(f"{repository}@{digest} is not tagged with build {run.number}", rule="sign.not-built-by-run")
    return {"run": str(run.id), "build": str(run.number), "source_repo": run.repo_name, "commit": run.sha,
            "ref": run.ref, "trigger": run.trigger}


@dataclass(frozen=True)
class ClaimInfo:
    run: dict[str, Any]
    run_token: str
    secrets: dict[str, str]
    host_execution: bool


def hand_over(session: Session, settings: Settings, run: Run) -> ClaimInfo:
    """Everything a runner needs for the run it just claimed (the run token is shown once)."""
    token = issue_run_token(session, run.id, run.repo_name, run.sha, run.pipeline, push_scope(session, settings, run))
    scope = None if run.deployable else secrets.SecretScope.ALL
    values = secrets.load_secrets(session, settings, run.repo_id, only=scope)
    # Only reviewed code runs on the host: a deployable CI run (a commit on the protected default
    # branch), never a PR's, nor a CI run someone started by hand on another ref or commit.
    host = run.deployable and run.pipeline == "ci" and run.repo_name in host_execution_repos(session)
    info = run_payload(run, url=run_url(settings, run.id),
                       kubernetes_version=oldest_cluster_version(session, settings.data_dir))
    info["first_step_index"] = (session.execute(select(Step.index).where(Step.run_id == run.id)
                                                .order_by(Step.index.desc()).limit(1)).scalar_one_or_none() or -1) + 1
    return ClaimInfo(run=info, run_token=token, secrets=values, host_execution=host)


def add_steps(session: Session, run: Run, steps: list[dict[str, Any]]) -> None:
    known = {s.index for s in run.steps}
    for st in steps:
        if st["index"] in known:
            continue
        session.add(Step(run_id=run.id, index=st["index"], name=str(st["name"])[:200], kind=st["kind"],
                         state="pending", needs=list(st.get("needs") or [])))


def update_step(session: Session, run: Run, index: int, values: dict[str, Any]) -> None:
    step = next((s for s in run.steps if s.index == index), None)
    if step is None:
        return
    for key in ("state", "exit_code", "message", "started_at", "finished_at"):
        if key in values:
            setattr(step, key, values[key])


def append_logs(session: Session, run: Run, chunks: list[tuple[int, str]]) -> int:
    """Store chunks with the next run-wide sequence numbers; returns the last one."""
    if not chunks:
        return run.log_seq
    last: int = session.execute(update(Run).where(Run.id == run.id).values(log_seq=Run.log_seq + len(chunks))
                                .returning(Run.log_seq)).scalar_one()
    for i, (step, text) in enumerate(chunks):
        session.add(LogChunk(run_id=run.id, seq=last - len(chunks) + 1 + i, step_index=step, text=text))
    return last


def finish(session: Session, settings: Settings, run: Run, state: str, failed_step: str | None, message: str,
           outputs: dict[str, Any]) -> None:
    run.state, run.failed_step, run.message = state, failed_step, message[:4000]
    run.finished_at = utcnow()
    run.outputs = dict(outputs)
    run.lease_owner, run.lease_expires_at = None, None
    revoke_run_tokens(session, run.id)
    target = f"{run.repo_name}#run-{run.number}"
    record(session, actor=SERVICE_USER, action="pipeline.run.finished", target=target,
           payload=run_payload(run, failed_step=failed_step, message=run.message, url=run_url(settings, run.id)))
    if state != "success" or run.pipeline != "ci":
        return
    arts = session.execute(select(Artifact).where(Artifact.run_id == run.id)).scalars().all()
    image = outputs.get("image") or {}
    record(session, actor=SERVICE_USER, action="pipeline.ci.succeeded", target=target, payload={
        **run_payload(run, url=run_url(settings, run.id)),
        "image": {"repository": image.get("repository"), "digest": image.get("digest"),
                  "tags": image.get("tags", [])} if image.get("pushed") else None,
        "artifacts": [{"name": a.name, "kind": a.kind, "digest": a.digest, "size": a.size,
                       "media_type": a.media_type,
                       "url": f"{settings.base_url}/api/v1/artifacts/{a.digest}"} for a in arts],
    })


def publish_artifact(session: Session, settings: Settings, run: Run, name: str, kind: str, media_type: str,
                     staged: artifacts.Staged, retention_days: int) -> Artifact:
    row = artifacts.record_staged(session, settings, run, name, kind, media_type, staged,
                                  utcnow() + timedelta(days=retention_days))
    return row

"""REST routes: runs (list, show, logs, live log over SSE, cancel, retry, start), artifacts, secrets,
and the published JSON Schemas of the pipeline files."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import (
    Forbidden,
    InvalidInput,
    NotFound,
    Permission,
    Principal,
    PrincipalDep,
    SessionDep,
    Settings,
    state_of,
)
from conveyor.forge import bare, get_repo
from conveyor.pipelines import artifacts, listing, queue, secrets
from conveyor.pipelines.config import run_url
from conveyor.pipelines.logs import event_stream, read_chunks
from conveyor.pipelines.models import FINISHED, Artifact, Run
from conveyor.pipelines.runs import is_deployable
from conveyor.pipelines.schemas import (
    ArtifactOut,
    ChunkOut,
    LogOut,
    RunCreate,
    RunDetailOut,
    RunOut,
    SecretIn,
    SecretOut,
    StepOut,
)
from conveyor.pipelines.spec import schema

router = APIRouter(prefix="/api/v1", tags=["pipelines"])


def _settings(request: Request) -> Settings:
    return state_of(request).settings


def _run_out(settings: Settings, r: Run) -> dict[str, Any]:
    return dict(id=r.id, repo=r.repo_name, number=r.number, pipeline=r.pipeline, sha=r.sha, ref=r.ref,
                deployable=r.deployable, runner=r.runner, labels=list(r.labels or []), commits=list(r.commits or []),
                security_update=r.security_update,
                pr_number=r.pr_number, trigger=r.trigger, retry_of=r.retry_of, state=r.state,
                failed_step=r.failed_step, message=r.message, attempt=r.attempt, cancel_requested=r.cancel_requested,
                queued_at=r.queued_at, started_at=r.started_at, finished_at=r.finished_at, created_by=r.created_by,
                outputs=r.outputs or {}, url=run_url(settings, r.id))


def _artifact_out(settings: Settings, a: Artifact) -> ArtifactOut:
    return ArtifactOut(name=a.name, kind=a.kind, digest=a.digest, size=a.size, media_type=a.media_type,
                       created_at=a.created_at, expires_at=a.expires_at,
                       url=f"{settings.base_url}/api/v1/artifacts/{a.digest}")


def _get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}", rule="run.exists")
    return run


@router.get("/runs", response_model=list[RunOut])
def list_runs(request: Request, session: SessionDep, principal: PrincipalDep, repo: str | None = None,
              state: str | None = None, pipeline: str | None = None,
              limit: int = Query(50, ge=1, le=500)) -> list[dict[str, Any]]:
    principal.require(Permission.READ)
    repo_id = get_repo(session, repo).id if repo else None
    rows = listing.list_runs(session, repo_id=repo_id, state=state or "", pipeline=pipeline or "", limit=limit)
    return [_run_out(_settings(request), r) for r in rows]


@router.get("/runs/{run_id}", response_model=RunDetailOut)
def show_run(run_id: int, request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require(Permission.READ)
    run = _get_run(session, run_id)
    settings = _settings(request)
    arts = session.execute(select(Artifact).where(Artifact.run_id == run.id).order_by(Artifact.id)).scalars()
    return {
        **_run_out(settings, run),
        "steps": [StepOut(index=s.index, name=s.name, kind=s.kind, state=s.state, exit_code=s.exit_code,
                          message=s.message, started_at=s.started_at, finished_at=s.finished_at,
                          needs=list(s.needs or [])) for s in run.steps],
        "artifacts": [_artifact_out(settings, a) for a in arts],
    }


@router.get("/runs/{run_id}/logs", response_model=LogOut)
def run_logs(run_id: int, session: SessionDep, principal: PrincipalDep, after: int = Query(0, ge=0),
             limit: int = Query(1000, ge=1, le=10000), format: str = "json") -> Any:
    principal.require(Permission.READ)
    run = _get_run(session, run_id)
    finished = run.state in FINISHED
    chunks = read_chunks(session, run_id, after, limit)
    if format == "text":
        return PlainTextResponse("".join(c.text for c in chunks))
    nxt = chunks[-1].seq if chunks else after
    return LogOut(run_id=run_id, state=run.state, next=nxt, finished=finished and nxt >= run.log_seq,
                  chunks=[ChunkOut(seq=c.seq, step=c.step, text=c.text) for c in chunks])


@router.get("/runs/{run_id}/logs/stream")
async def stream_logs(run_id: int, request: Request, principal: PrincipalDep,
                      after: int = Query(0, ge=0)) -> StreamingResponse:
    """Server-sent events: one ``log`` event per stored chunk, then ``end`` when the run is over."""
    principal.require(Permission.READ)
    stream = await event_stream(state_of(request).db, run_id, after, request.is_disconnected)
    return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _may_control(principal: Principal, run: Run, what: str) -> None:
    """People cancel and retry their own runs (they started it, or it is their PR's); cluster
    administrators and admins anyone's."""
    principal.require(Permission.WRITE)
    if principal.name == run.created_by or principal.can(Permission.MANAGE_REPO):
        return
    raise Forbidden(f"run {run.id} was started by {run.created_by}; only they or a cluster-admin may {what} it",
                    rule="run.owner")


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: int, request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    run = _get_run(session, run_id)
    _may_control(principal, run, "cancel")
    queue.request_cancel(session, run, principal.name)
    return _run_out(_settings(request), run)


@router.post("/runs/{run_id}/retry", response_model=RunOut, status_code=201)
def retry_run(run_id: int, request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    old = _get_run(session, run_id)
    _may_control(principal, old, "retry")
    if old.state not in FINISHED:
        raise InvalidInput(f"run {run_id} is still {old.state}; cancel it first", rule="run.active")
    run = queue.enqueue(session, repo_id=old.repo_id, repo_name=old.repo_name, pipeline=old.pipeline, sha=old.sha,
                        ref=old.ref, trigger="retry", actor=old.created_by, pr_number=old.pr_number, retry_of=old.id,
                        labels=tuple(old.labels or ()), commits=list(old.commits or []),
                        security_update=old.security_update,
                        deployable=is_deployable(session, _settings(request), old.repo_name, old.pipeline, old.sha))
    assert run is not None
    return _run_out(_settings(request), run)


@router.post("/repos/{repo}/runs", response_model=RunOut, status_code=201)
def start_run(repo: str, body: RunCreate, request: Request, session: SessionDep,
              principal: PrincipalDep) -> dict[str, Any]:
    principal.require(Permission.WRITE)
    settings = _settings(request)
    r = get_repo(session, repo)
    git = bare(settings, r)
    ref = f"refs/heads/{body.ref or r.default_branch}"
    sha = body.sha or git.rev_parse(ref)
    if sha is None or not git.has_commit(sha):
        raise NotFound(f"'{body.sha or ref}' is not a commit of '{repo}'", rule="run.commit-exists")
    # A manual CI run is deployable only for a commit on the protected default branch; any other is
    # labelled as not deployable and its image is never pushed.
    run = queue.enqueue(session, repo_id=r.id, repo_name=r.name, pipeline=body.pipeline, sha=sha, ref=ref,
                        trigger="manual", actor=principal.name,
                        deployable=is_deployable(session, settings, r.name, body.pipeline, sha))
    assert run is not None
    return _run_out(settings, run)


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactOut])
def run_artifacts(run_id: int, request: Request, session: SessionDep, principal: PrincipalDep) -> list[ArtifactOut]:
    principal.require(Permission.READ)
    _get_run(session, run_id)
    rows = session.execute(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)).scalars()
    return [_artifact_out(_settings(request), a) for a in rows]


@router.get("/artifacts/{digest}")
def download_artifact(digest: str, request: Request, session: SessionDep, principal: PrincipalDep) -> Response:
    principal.require(Permission.READ)
    row = artifacts.get_by_digest(session, digest)
    path = artifacts.blob_path(_settings(request), digest)
    if not path.exists():
        raise NotFound(f"artifact {digest} is no longer stored", rule="artifact.retained")
    return FileResponse(path, media_type=row.media_type, filename=f"{row.name}.tar.gz"
                        if row.media_type.endswith("gzip") else row.name,
                        headers={"Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                                 "Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/repos/{repo}/secrets", response_model=list[SecretOut])
def list_secrets(repo: str, session: SessionDep, principal: PrincipalDep) -> list[SecretOut]:
    """Each secret's name and scope (which runs get it); values are never returned."""
    principal.require(Permission.MANAGE_REPO)
    return [SecretOut(name=n, scope=sc) for n, sc in secrets.secret_scopes(session, get_repo(session, repo).id)]


@router.put("/repos/{repo}/secrets/{name}", status_code=204)
def put_secret(repo: str, name: str, body: SecretIn, request: Request, session: SessionDep,
               principal: PrincipalDep) -> Response:
    principal.require(Permission.MANAGE_REPO)
    r = get_repo(session, repo)
    secrets.set_secret(session, _settings(request), r.id, r.name, name, body.value, principal.name,
                       secrets.SecretScope(body.scope))
    return Response(status_code=204)


@router.delete("/repos/{repo}/secrets/{name}", status_code=204)
def delete_secret(repo: str, name: str, session: SessionDep, principal: PrincipalDep) -> Response:
    principal.require(Permission.MANAGE_REPO)
    r = get_repo(session, repo)
    secrets.delete_secret(session, r.id, r.name, name, principal.name)
    return Response(status_code=204)


@router.get("/pipelines/schemas/{name}.json")
def published_schema(name: str) -> JSONResponse:
    """The JSON Schema of ``.conveyor/pipeline.yaml`` (``pipeline``) or ``.conveyor/app.yaml`` (``app``)."""
    if name not in ("pipeline", "app"):
        raise NotFound(f"no schema '{name}'; there are 'pipeline' and 'app'")
    return JSONResponse(schema(name), media_type="application/schema+json")

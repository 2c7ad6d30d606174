"""The runner protocol over HTTP (``/api/v1/runner/...``) and runner administration (``/api/v1/runners``).

A runner holds nothing but the server's URL and its runner token. It says hello (which recovers
at once the runs an earlier, crashed instance of it held), long-polls for a claim, then reports
the run: its steps, log chunks, artifacts and result, heartbeating meanwhile (each heartbeat renews
the lease and answers whether the run was cancelled). Every report names the runner's instance;
one that lost the lease is refused with ``run.lease-lost`` and must stop.

Steps never see the runner token, only the run's own token; so a step cannot report its run.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from conveyor.core import (
    Conflict,
    Forbidden,
    NotFound,
    Permission,
    Principal,
    PrincipalDep,
    SessionDep,
    state_of,
    utcnow,
)
from conveyor.core.http import principal_from_header
from conveyor.pipelines import artifacts, queue, runners, runs
from conveyor.pipelines.config import EngineConfig
from conveyor.pipelines.models import Run
from conveyor.registry import registry_host, sign_image

router = APIRouter(prefix="/api/v1", tags=["runners"])
MAX_WAIT = 25.0
MAX_LOG_REQUEST = 4 * 1024 * 1024


class Hello(BaseModel):
    instance: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._-]+$")


class RunnerConfig(BaseModel):
    name: str
    labels: list[str]
    lease_seconds: int
    max_log_bytes: int
    max_attempts: int
    recovered: int


class ClaimIn(Hello):
    wait: float = Field(default=0, ge=0, le=MAX_WAIT)


class ClaimOut(BaseModel):
    run: dict[str, Any]
    run_token: str
    secrets: dict[str, str]
    host_execution: bool


class StepIn(BaseModel):
    index: int = Field(ge=0, le=10_000)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    needs: list[str] = Field(default_factory=list, max_length=200)


class StepsIn(Hello):
    steps: list[StepIn] = Field(max_length=500)


class StepUpdate(Hello):
    state: Literal["pending", "running", "success", "failure", "cancelled", "skipped"]
    exit_code: int | None = Field(default=None, ge=-1000, le=1000)
    message: str = Field(default="", max_length=4000)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Chunk(BaseModel):
    step: int = Field(ge=0, le=10_000)
    text: str = Field(max_length=MAX_LOG_REQUEST)


class LogsIn(Hello):
    chunks: list[Chunk] = Field(max_length=1000)


class FinishIn(Hello):
    state: Literal["success", "failure", "error", "cancelled"]
    failed_step: str | None = Field(default=None, max_length=200)
    message: str = Field(default="", max_length=4000)
    outputs: dict[str, Any] = Field(default_factory=dict)


class SignIn(Hello):
    repository: str = Field(max_length=255)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class ReleaseIn(Hello):
    why: str = Field(default="was interrupted: its runner shut down", max_length=400)


class Heartbeat(BaseModel):
    cancel: bool
    lost: bool = False


class RunnerIn(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    labels: list[str] = Field(default_factory=list, max_length=50)
    repos: list[str] = Field(default_factory=list, max_length=500)


class RunnerOut(BaseModel):
    name: str
    labels: list[str]
    repos: list[str]
    created_by: str
    created_at: datetime
    last_seen_at: datetime | None
    revoked: bool


class RunnerRegistered(RunnerOut):
    token: str


class HostExecution(BaseModel):
    repos: list[str] = Field(default_factory=list, max_length=500)


# A waiting claim is woken at once by a run queued in this process (queue.wake) and looks again every
# RECHECK_SECONDS for runs queued by another server on the same database. At 0.5 s, the built-in
# runner's idle long poll (authenticate, claim query, settings read) took half of an idle server's
# py-spy samples; a run queued by another server now waits up to 2 s for its runner.
RECHECK_SECONDS = 2.0


def _config() -> EngineConfig:
    return EngineConfig.from_env()


def _leased(session: Session, principal: Principal, run_id: int, instance: str) -> Run:
    """The run, if this runner instance holds its lease."""
    runner = runners.authenticated(session, principal)
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}", rule="run.exists")
    if run.state != "running" or run.lease_owner != f"{runner.name}/{instance}":
        raise Conflict(f"run {run_id} is not leased to {runner.name}/{instance} (it is {run.state})",
                       rule="run.lease-lost")
    return run


# --- the protocol -----------------------------------------------------------------------------
@router.post("/runner/hello", response_model=RunnerConfig)
def hello(body: Hello, request: Request, principal: PrincipalDep) -> RunnerConfig:
    """A runner (re)starts: runs its earlier instances held and no longer renew are recovered now."""
    db = state_of(request).db
    with db.session() as s:  # its own unit of work: recovery below takes the write lock again
        runner = runners.authenticated(s, principal)
        name, labels = runner.name, list(runner.labels)
    cfg = _config()
    n = queue.recover(db, cfg.max_attempts, dead_owner=f"{name}/{body.instance}",
                      quiet_for=timedelta(seconds=max(1, cfg.lease_seconds - 5)))
    return RunnerConfig(name=name, labels=labels, lease_seconds=cfg.lease_seconds,
                        max_log_bytes=cfg.max_log_bytes, max_attempts=cfg.max_attempts, recovered=n)


@router.post("/runner/claim", response_model=ClaimOut, responses={204: {"description": "nothing to run"}})
async def claim(body: ClaimIn, request: Request) -> Any:
    """Claim the oldest run this runner serves, waiting up to ``wait`` seconds for one."""
    st = state_of(request)
    auth = request.headers.get("authorization")
    deadline = asyncio.get_running_loop().time() + body.wait
    while True:
        seen = queue.generation()
        out = await asyncio.to_thread(_try_claim, st, auth, body.instance)
        if out is not None:
            return out
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0 or await request.is_disconnected():
            return Response(status_code=204)
        await asyncio.to_thread(queue.wait_for_work, seen, min(left, RECHECK_SECONDS))


def _try_claim(st: Any, authorization: str | None, instance: str) -> ClaimOut | None:
    with st.db.session() as s:
        principal = principal_from_header(s, authorization, False)
        row = runners.authenticated(s, principal)
        view = queue.RunnerView(row.name, instance, frozenset(row.labels), frozenset(row.repos))
    run_id = queue.claim(st.db, view, timedelta(seconds=_config().lease_seconds))
    if run_id is None:
        return None
    with st.db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        info = runs.hand_over(s, st.settings, run)
    return ClaimOut(run=info.run, run_token=info.run_token, secrets=info.secrets, host_execution=info.host_execution)


@router.post("/runner/runs/{run_id}/heartbeat", response_model=Heartbeat)
def heartbeat(run_id: int, body: Hello, session: SessionDep, principal: PrincipalDep) -> Heartbeat:
    try:
        run = _leased(session, principal, run_id, body.instance)
    except Conflict:
        return Heartbeat(cancel=True, lost=True)
    run.lease_expires_at = utcnow() + timedelta(seconds=_config().lease_seconds)
    return Heartbeat(cancel=run.cancel_requested)


@router.post("/runner/runs/{run_id}/steps", status_code=204)
def add_steps(run_id: int, body: StepsIn, session: SessionDep, principal: PrincipalDep) -> Response:
    run = _leased(session, principal, run_id, body.instance)
    runs.add_steps(session, run, [s.model_dump() for s in body.steps])
    return Response(status_code=204)


@router.patch("/runner/runs/{run_id}/steps/{index}", status_code=204)
def update_step(run_id: int, index: int, body: StepUpdate, session: SessionDep, principal: PrincipalDep) -> Response:
    run = _leased(session, principal, run_id, body.instance)
    runs.update_step(session, run, index, body.model_dump(exclude={"instance"}, exclude_unset=True) | {
        "state": body.state})
    return Response(status_code=204)


@router.post("/runner/runs/{run_id}/logs")
def append_logs(run_id: int, body: LogsIn, session: SessionDep, principal: PrincipalDep) -> dict[str, int]:
    run = _leased(session, principal, run_id, body.instance)
    return {"seq": runs.append_logs(session, run, [(c.step, c.text) for c in body.chunks])}


@router.put("/runner/runs/{run_id}/artifacts/{name}", status_code=201)
async def upload_artifact(run_id: int, name: str, request: Request, kind: str, media_type: str,
                          instance: str = "", digest: str | None = None) -> dict[str, Any]:
    """Publish a run's artifact, streamed; by its runner (holding the lease) or its own run token."""
    st = state_of(request)
    await asyncio.to_thread(_may_upload, st, request.headers.get("authorization"), run_id, instance)
    incoming = await asyncio.to_thread(artifacts.Incoming, st.settings, _config().max_artifact_bytes)
    try:
        async for chunk in request.stream():
            incoming.write(chunk)
    except BaseException:
        incoming.abort()
        raise
    staged = await asyncio.to_thread(incoming.close, digest)
    return await asyncio.to_thread(_record_artifact, st, run_id, name, kind, media_type, staged)


def _may_upload(st: Any, authorization: str | None, run_id: int, instance: str) -> None:
    with st.db.session() as s:
        principal = principal_from_header(s, authorization, False)
        scope = principal.scope
        if scope is not None and scope.run_id is not None:
            if scope.run_id != run_id:
                raise Forbidden(f"this token belongs to {scope.describe()}, not run {run_id}", rule="token.scope")
            run = s.get(Run, run_id)
            if run is None or run.state != "running":
                raise Conflict(f"run {run_id} is not running", rule="run.lease-lost")
            return
        _leased(s, principal, run_id, instance)


def _record_artifact(st: Any, run_id: int, name: str, kind: str, media_type: str,
                     staged: artifacts.Staged) -> dict[str, Any]:
    with st.db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        row = runs.publish_artifact(s, st.settings, run, name[:200], kind[:32], media_type[:100], staged,
                                    _config().artifact_retention_days)
        return {"name": row.name, "digest": row.digest, "size": row.size}


@router.post("/runner/runs/{run_id}/finish", status_code=204)
def finish(run_id: int, body: FinishIn, request: Request, session: SessionDep, principal: PrincipalDep) -> Response:
    run = _leased(session, principal, run_id, body.instance)
    runs.finish(session, state_of(request).settings, run, body.state, body.failed_step, body.message, body.outputs)
    return Response(status_code=204)


@router.post("/runner/runs/{run_id}/sign")
def sign(run_id: int, body: SignIn, request: Request) -> dict[str, str]:
    """Sign the image this run pushed (the runner asks; the key never leaves the server)."""
    st = state_of(request)
    with st.db.session() as s:
        principal = principal_from_header(s, request.headers.get("authorization"), False)
        run = _leased(s, principal, run_id, body.instance)
        claims = runs.signing_claims(s, st.settings, run, body.repository, body.digest)
    key = sign_image(request.app.state.registry, body.repository, body.digest, registry_host(st.settings), claims)
    return {"repository": body.repository, "digest": body.digest, "key_id": key}


@router.post("/runner/runs/{run_id}/release", status_code=204)
def release(run_id: int, body: ReleaseIn, session: SessionDep, principal: PrincipalDep) -> Response:
    """The runner is shutting down: the run goes back to the queue (or fails after its last attempt)."""
    run = _leased(session, principal, run_id, body.instance)
    queue.interrupt(session, run, _config().max_attempts, body.why)
    return Response(status_code=204)


# --- administration ---------------------------------------------------------------------------
def _runner_out(r: Any) -> RunnerOut:
    return RunnerOut(name=r.name, labels=r.labels, repos=r.repos, created_by=r.created_by, created_at=r.created_at,
                     last_seen_at=r.last_seen_at, revoked=r.revoked)


@router.post("/runners", response_model=RunnerRegistered, status_code=201)
def register_runner(body: RunnerIn, session: SessionDep, principal: PrincipalDep) -> RunnerRegistered:
    """Register a runner; its token is shown once."""
    principal.require(Permission.MANAGE_USERS)
    row, token = runners.register(session, principal, body.name, body.labels, body.repos)
    return RunnerRegistered(**_runner_out(row).model_dump(), token=token)


@router.get("/runners", response_model=list[RunnerOut])
def list_runners(session: SessionDep, principal: PrincipalDep) -> list[RunnerOut]:
    principal.require(Permission.READ)
    return [_runner_out(r) for r in runners.list_runners(session)]


@router.delete("/runners/{name}", status_code=204)
def revoke_runner(name: str, session: SessionDep, principal: PrincipalDep) -> Response:
    """Revoke a runner: its tokens stop working at once; the runs it held go back to the queue."""
    principal.require(Permission.MANAGE_USERS)
    runners.revoke(session, principal, name)
    return Response(status_code=204)


@router.get("/pipelines/host-execution", response_model=HostExecution)
def get_host_execution(session: SessionDep, principal: PrincipalDep) -> HostExecution:
    principal.require(Permission.READ)
    return HostExecution(repos=runs.host_execution_repos(session))


@router.put("/pipelines/host-execution", response_model=HostExecution)
def put_host_execution(body: HostExecution, session: SessionDep, principal: PrincipalDep) -> HostExecution:
    """Repositories whose non-PR pipelines may run `host: true` steps on the runner's host (unsafe; admin)."""
    principal.require(Permission.MANAGE_USERS)
    runs.set_host_execution_repos(session, body.repos, principal.name)
    return HostExecution(repos=runs.host_execution_repos(session))

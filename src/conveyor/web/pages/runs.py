"""Pipeline runs: the list, one run's steps and durations, and its log live over server-sent events."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from conveyor.core import NotFound, state_of
from conveyor.pipelines import FINISHED, get_run, list_runs
from conveyor.pipelines import logs as plogs
from conveyor.web import auth
from conveyor.web.render import page
from conveyor.web.routing import PageRoute

router = APIRouter(route_class=PageRoute)
LOG_PAGE = 5000



@router.get("/runs", response_class=HTMLResponse)
def runs(request: Request, repo: str = "", state: str = "", limit: int = Query(100, ge=1, le=500)) -> Response:
    ws = auth.require(request)
    with state_of(request).db.session() as s:
        rows = list_runs(s, repo=repo, state=state, limit=limit)
        return page(request, "runs.html", ws, runs=rows, repo=repo, state=state)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: int, request: Request) -> Response:
    ws = auth.require(request)
    with state_of(request).db.session() as s:
        run = get_run(s, run_id)
        if run is None:
            raise NotFound(f"no pipeline run {run_id}", rule="run.exists")
        chunks = plogs.read_chunks(s, run_id, 0, LOG_PAGE)
        by_step: dict[int, list[str]] = {}
        for c in chunks:  # steps that ran at once (needs:) interleave in the log; here each stands apart
            by_step.setdefault(c.step, []).append(c.text)
        return page(request, "run.html", ws, run=run, steps=list(run.steps),
                    log="".join(c.text for c in chunks), after=chunks[-1].seq if chunks else 0,
                    finished=run.state in FINISHED, step_logs={k: "".join(v) for k, v in by_step.items()})


@router.get("/ui/runs/{run_id}/events")
async def run_events(run_id: int, request: Request, after: int = Query(0, ge=0)) -> Response:
    """The page's own stream, signed in by the session cookie (EventSource cannot send a bearer token)."""
    await asyncio.to_thread(auth.require, request)  # the session's rows: off the event loop
    stream = await plogs.event_stream(state_of(request).db, run_id, after, request.is_disconnected)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

"""Clusters and agents: each sync's state from the deploy statuses the agents post, and each Conveyor
agent's inventory, drift corrections and events, as the agent last reported them to the server (or, where
``CONVEYOR_AGENT_STATUS_URLS`` names an agent's ``/status`` URL, read from it live)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from conveyor.clusters import AgentKind, last_agent_report, list_specs, registrations, sanitise_agent_status
from conveyor.clusters.flux import FluxReport, last_reports
from conveyor.core import ConveyorError, Settings, state_of
from conveyor.delivery import gitops_repo_names
from conveyor.forge import bare, combined_status, get_repo
from conveyor.web import auth
from conveyor.web.pages.board import DEPLOY_PREFIX, environments_at, sync_of
from conveyor.web.pages.objects import health_counts, tree
from conveyor.web.render import page
from conveyor.web.routing import PageRoute

router = APIRouter(route_class=PageRoute)
AGENT_URLS_ENV = "CONVEYOR_AGENT_STATUS_URLS"  # "cluster=http://host:port/status,other=..."
AGENT_TIMEOUT = 1.5


@dataclass
class SyncRow:
    cluster: str
    sync: str
    state: str  # Ready | Reconciling | Stalled
    revision: str
    description: str
    target_url: str
    repo: str
    env: str
    branch: str
    updated_at: datetime | None = None


@dataclass
class ClusterView:
    name: str
    kind: str = "unknown"
    phase: str = "not managed by this server"
    version: str = ""
    syncs: list[SyncRow] = field(default_factory=list)
    agent: dict[str, Any] | None = None
    agent_error: str = ""
    agent_reported_at: datetime | None = None  # when the agent last reported (None: read from its URL)
    agent_kind: str = ""  # conveyor | flux, when the cluster is registered with the server
    flux: list[FluxReport] = field(default_factory=list)  # what Flux last reported, per object


def agent_urls() -> dict[str, str]:
    out = {}
    for part in os.environ.get(AGENT_URLS_ENV, "").split(","):
        name, sep, url = part.strip().partition("=")
        if sep and name and url:
            out[name] = url
    return out


def deploy_rows(session: Session, settings: Settings) -> list[SyncRow]:
    """The state each agent last reported on the tip of every environment branch."""
    rows: list[SyncRow] = []
    for name in sorted(gitops_repo_names(session)):
        try:
            repo = get_repo(session, name)
        except ConveyorError:
            continue
        git = bare(settings, repo)
        tips = git.branches()
        if "main" not in tips:
            continue
        try:
            envs = environments_at(str(git.path), tips["main"])
        except ConveyorError:
            continue
        for env in envs.values():
            tip = tips.get(env.branch)
            if tip is None:
                continue
            for st in combined_status(session, repo, tip).statuses:
                if not st.context.startswith(DEPLOY_PREFIX):
                    continue
                cluster, _, sync = st.context[len(DEPLOY_PREFIX):].partition("/")
                rows.append(SyncRow(cluster, sync or "-", sync_of(st), tip, st.description, st.target_url,
                                    name, env.name, env.branch, st.updated_at))
    return rows


async def fetch_agent(client: httpx.AsyncClient, url: str) -> tuple[dict[str, Any] | None, str]:
    try:
        r = await client.get(url)
        r.raise_for_status()
        doc = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        return None, f"agent status unavailable: {exc}"
    if not isinstance(doc, dict):
        return None, "agent status is not a JSON object"
    try:  # read from the agent, not through the server's API: checked and bounded the same way
        return sanitise_agent_status(doc), ""
    except ConveyorError as exc:
        return None, f"agent status refused: {exc}"


def when(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


@router.get("/clusters", response_class=HTMLResponse)
async def clusters(request: Request) -> Response:
    # Async for the agents' status fetched at once below; the database work runs in worker threads.
    ws = await asyncio.to_thread(auth.require, request)
    st = state_of(request)

    def collect() -> dict[str, ClusterView]:
        views: dict[str, ClusterView] = {}
        for spec in list_specs(st.settings.data_dir):
            views[spec.name] = ClusterView(spec.name, spec.kind, spec.phase, spec.version)
        with st.db.session() as s:
            for row in deploy_rows(s, st.settings):
                views.setdefault(row.cluster, ClusterView(row.cluster)).syncs.append(row)
            for reg in registrations(s):
                v = views.setdefault(reg.name, ClusterView(reg.name, phase="registered"))
                v.agent_kind = reg.agent
                if reg.agent == AgentKind.FLUX:
                    v.flux = last_reports(s, reg.name)
                elif (report := last_agent_report(s, reg.name)) is not None:
                    v.agent, v.agent_reported_at = report
        return views

    views = await asyncio.to_thread(collect)
    urls = agent_urls()
    if urls:
        async with httpx.AsyncClient(timeout=AGENT_TIMEOUT) as client:
            names = sorted(urls)
            docs = await asyncio.gather(*(fetch_agent(client, urls[n]) for n in names))
        for name, (doc, err) in zip(names, docs, strict=True):
            v = views.setdefault(name, ClusterView(name))
            v.agent, v.agent_error = doc, err
    return page(request, "clusters.html", ws, clusters=sorted(views.values(), key=lambda v: v.name),
                agent_urls=urls, when=when, tree=tree, health_counts=health_counts)

"""Promotion boards: every app at a glance, and one app's environments with what each promotion waits for."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.clusters import AgentKind, last_agent_report, registrations
from conveyor.clusters.flux import FluxReport, last_reports, parse_revision
from conveyor.core import state_of, utcnow
from conveyor.delivery import (
    ACTIVE_STATES,
    FAILURE_STATES,
    App,
    Environment,
    Promotion,
    PromotionState,
    app_status,
    dora_for,
    load_environments,
    waiting_on,
)
from conveyor.delivery import running_version as running_of
from conveyor.forge import BareRepo, Repository, StatusView, bare, combined_status, get_repo
from conveyor.web import auth
from conveyor.web.pages.objects import TreeNode, health_counts, tree
from conveyor.web.render import page
from conveyor.web.routing import PageRoute

router = APIRouter(route_class=PageRoute)
DEPLOY_PREFIX = "conveyor/deploy/"


@dataclass(frozen=True)
class Cell:
    running: Any
    pending: Any
    last: Any


# The columns the overview and the registry need: loading whole records for every app is the slow part.
SUMMARY = (Promotion.id, Promotion.app, Promotion.env, Promotion.version, Promotion.state, Promotion.merge_commit,
           Promotion.image_digest)


def latest_by_app_env(session: Session) -> dict[tuple[str, str], list[Any]]:
    """(app, env) -> promotion summaries (rows with the SUMMARY attributes), newest first."""
    by: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in session.execute(select(*SUMMARY).order_by(Promotion.id.desc())):
        by[(row.app, row.env)].append(row)
    return by


def running(rows: list[Any]) -> Any:
    # Delivery's own rule for what runs after failures and rollbacks; it reads only SUMMARY attributes.
    return running_of(cast(list[Promotion], rows))


def overview(session: Session) -> tuple[list[str], list[tuple[App, dict[str, Cell]]]]:
    apps = list(session.execute(select(App).order_by(App.name)).scalars())
    by = latest_by_app_env(session)
    first_seen: dict[str, int] = {}
    for (_, env), rows in by.items():
        first_seen[env] = min(first_seen.get(env, rows[-1].id), rows[-1].id)
    # Environments are promoted in order, so the first promotion into each gives the column order.
    envs = sorted(first_seen, key=lambda e: first_seen[e])
    table = []
    for app in apps:
        cells = {}
        for env in envs:
            ps = by.get((app.name, env), [])
            cells[env] = Cell(running(ps), next((p for p in ps if p.state in ACTIVE_STATES), None),
                              ps[0] if ps else None)
        table.append((app, cells))
    return envs, table


@lru_cache(maxsize=256)
def environments_at(repo_path: str, main: str) -> dict[str, Environment]:
    """Environment definitions at one commit of the GitOps main never change: parse them once."""
    return load_environments(BareRepo(Path(repo_path)), main)


def agent_kinds(session: Session) -> dict[str, str]:
    """cluster -> the agent it runs (conveyor | flux), for the clusters registered with the server."""
    return {r.name: r.agent for r in registrations(session)}


def flux_report_for(session: Session, cluster: str, branch: str) -> FluxReport | None:
    """What Flux last said about the Kustomization that syncs ``branch`` on ``cluster``."""
    for r in last_reports(session, cluster):
        parsed = parse_revision(r.revision)
        if r.kind == "Kustomization" and parsed is not None and parsed[0] == branch:
            return r
    return None


def sync_of(st: StatusView) -> str:
    return {"success": "Ready", "pending": "Reconciling"}.get(st.state, "Stalled")


def deploy_statuses(session: Session, repo: Repository, tip: str | None) -> list[StatusView]:
    """The agents post ``conveyor/deploy/{cluster}/{sync}`` on the commits they applied."""
    if tip is None:
        return []
    return [s for s in combined_status(session, repo, tip).statuses if s.context.startswith(DEPLOY_PREFIX)]


def object_trees(session: Session, cluster: str, deploys: list[StatusView]) -> list[tuple[str, dict[str, int],
                                                                                       list[TreeNode]]]:
    """(sync, health counts, tree) of the syncs that deploy this environment, as the cluster's agent last
    reported them (Conveyor's agent only; Flux reports events, not objects)."""
    report = last_agent_report(session, cluster)
    if report is None:
        return []
    names = {d.context[len(DEPLOY_PREFIX):].partition("/")[2] for d in deploys
             if d.context[len(DEPLOY_PREFIX):].partition("/")[0] == cluster}
    return [(str(sync["name"]), health_counts(sync.get("objects")), tree(sync.get("objects")))
            for sync in report[0].get("syncs", []) if sync.get("name") in names and sync.get("objects")]


def daily_counts(promotions: list[Promotion], env: str, days: int) -> list[tuple[str, int, int]]:
    """(day, verified, failed) for the last ``days`` days, oldest first."""
    today = utcnow().date()
    counts = {today - timedelta(days=i): [0, 0] for i in range(days)}
    for p in promotions:
        if p.env != env or p.is_rollback:
            continue
        when = (p.finished_at or p.failed_at or p.created_at).date()
        if when in counts:
            if p.state == PromotionState.VERIFIED:
                counts[when][0] += 1
            elif p.state in FAILURE_STATES:
                counts[when][1] += 1
    return [(d.isoformat(), v, f) for d, (v, f) in sorted(counts.items())]


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> Response:
    ws = auth.require(request)
    st = state_of(request)
    with st.db.session() as s:
        envs, table = overview(s)
        return page(request, "apps.html", ws, envs=envs, table=table,
                    quiet_states=(PromotionState.VERIFIED, PromotionState.SUPERSEDED))


@router.get("/apps/{name}", response_class=HTMLResponse)
def board(name: str, request: Request, days: int = 30) -> Response:
    ws = auth.require(request)
    st = state_of(request)
    days = max(1, min(days, 365))
    with st.db.session() as s:
        statuses = app_status(s, st.settings, name)
        app = s.execute(select(App).where(App.name == name)).scalar_one()
        repo = get_repo(s, app.gitops_repo)
        git = bare(st.settings, repo)
        tips = git.branches()
        envs = environments_at(str(git.path), tips["main"]) if "main" in tips else {}
        columns = []
        agents = agent_kinds(s)
        for es in statuses:
            env = envs.get(es.env)
            branch = env.branch if env else f"env/{es.env}"
            agent = agents.get(es.cluster, "")
            waits = waiting_on(s, st.settings, es.pending, es.cluster) if es.pending else []
            deploys = deploy_statuses(s, repo, tips.get(branch))
            if agent == AgentKind.FLUX:
                waits = [w.replace(f"the agent of cluster '{es.cluster}'", f"Flux on cluster '{es.cluster}'")
                         for w in waits]
            columns.append({
                "status": es,
                "branch": branch,
                "agent": agent,
                "flux": flux_report_for(s, es.cluster, branch) if agent == AgentKind.FLUX else None,
                "waits": waits,
                "deploys": deploys,
                "objects": object_trees(s, es.cluster, deploys) if agent != AgentKind.FLUX else [],
            })
        promotions = list(s.execute(select(Promotion).where(Promotion.app == name)
                                    .order_by(Promotion.id.desc())).scalars())
        dora = dora_for(s, st.settings, name, days)
        charts = {d.env: daily_counts(promotions, d.env, days) for d in dora}
        return page(request, "board.html", ws, app=app, columns=columns, dora=dora, charts=charts, days=days,
                    recent=promotions[:15], sync_of=sync_of, failure_states=FAILURE_STATES)

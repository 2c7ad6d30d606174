"""The composition root: one ASGI app hosting every component on one port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from anyio import to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

import conveyor
from conveyor.clusters.api import router as clusters_router
from conveyor.clusters.flux import SyncTarget
from conveyor.clusters.flux.api import STATE_KEY as FLUX_TARGETS
from conveyor.clusters.flux.api import router as flux_router
from conveyor.clusters.supervisor import ClusterSupervisor
from conveyor.core import AppState, ConveyorError, Database, OutboxWorker, Settings, outbound
from conveyor.core.api import router as core_router
from conveyor.core.headers import SecurityHeaders
from conveyor.core.http import install_error_handlers, problem_response
from conveyor.core.limits import RequestGuard
from conveyor.core.settings_api import router as settings_router
from conveyor.delivery import lifecycle as delivery_lifecycle
from conveyor.delivery.api import router as delivery_router
from conveyor.delivery.secrets_api import router as delivery_secrets_router
from conveyor.docs_routes import install_docs
from conveyor.forge import lifecycle as forge_lifecycle
from conveyor.forge.api import router as forge_router
from conveyor.forge.git_http import GitHttpApp
from conveyor.forge.webhooks import WebhookSender
from conveyor.pipelines import lifecycle as pipelines_lifecycle
from conveyor.pipelines.api import router as pipelines_router
from conveyor.pipelines.runner_api import router as runner_router
from conveyor.registry import lifecycle as registry_lifecycle
from conveyor.registry.api import RUNNING_IMAGES
from conveyor.registry.api import router as registry_router
from conveyor.registry.app import RegistryDispatch
from conveyor.registry.refresh import CacheRefresher
from conveyor.web import install as install_web


class Background(Protocol):
    """Background work a component runs inside the server."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def environments_on(session: Session, settings: Settings, cluster: str) -> list[SyncTarget]:
    """Delivery's environments (on each GitOps repo's main) whose cluster is ``cluster``: what a Flux
    cluster's manifests sync. Glue between delivery and clusters, which must not import each other."""
    from conveyor.delivery import load_environments
    from conveyor.forge import bare
    from conveyor.forge.repos import list_repos

    out: list[SyncTarget] = []
    for repo in list_repos(session):
        if repo.kind != "gitops":
            continue
        git = bare(settings, repo)
        main = git.branch_tip("main")
        if main is None:
            continue
        try:
            envs = load_environments(git, main)
        except ConveyorError:
            continue  # an invalid main is reported by delivery's own checks
        out += [SyncTarget(repo.name, e.name, e.branch) for e in sorted(envs.values(), key=lambda e: e.name)
                if e.cluster == cluster]
    return out


def images_running(session: Session) -> dict[str, list[str]]:
    """digest -> ["app/env", ...] that runs it now (delivery's records), for the registry's lineage view."""
    from sqlalchemy import select

    from conveyor.delivery import Promotion, running_version

    rows: dict[tuple[str, str], list[Promotion]] = {}
    for p in session.execute(select(Promotion).order_by(Promotion.id.desc())).scalars():
        rows.setdefault((p.app, p.env), []).append(p)
    out: dict[str, list[str]] = {}
    for (app, env), ps in sorted(rows.items()):
        running = running_version(ps)
        if running is not None:
            out.setdefault(running.image_digest, []).append(f"{app}/{env}")
    return out


def register_components(settings: Settings) -> None:
    forge_lifecycle.register()
    pipelines_lifecycle.register(settings)
    delivery_lifecycle.register(settings)


def create_app(settings: Settings, db: Database | None = None) -> FastAPI:
    register_components(settings)
    db = db or Database(settings.db_url)
    state = AppState(settings=settings, db=db)
    registry = registry_lifecycle.create(db, settings)

    def start() -> list[Background]:
        forge_lifecycle.recover(db, settings)
        registry.start()
        pipelines_lifecycle.recover(db, settings)
        if not settings.background_workers:
            return []
        workers: list[Background] = [
            OutboxWorker(db),
            WebhookSender(db, outbound.Policy.for_database(db, settings)),
            registry_lifecycle.UploadJanitor(registry),
            CacheRefresher(registry),
            # local clusters outlive server restarts; restart their processes that died
            ClusterSupervisor(settings.data_dir),
            delivery_lifecycle.engine(db, settings),
            pipelines_lifecycle.RunJanitor(db, settings),
        ]
        pipeline_workers = pipelines_lifecycle.pool(db, settings)  # None when concurrency is 0
        if pipeline_workers is not None:
            workers.append(pipeline_workers)
        for w in workers:
            w.start()
        return workers

    def stop(workers: list[Background]) -> None:
        for w in reversed(workers):
            w.stop()
        db.dispose()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Recovery and the workers' start and stop use the database: off the event loop (db.off-event-loop).
        workers = await to_thread.run_sync(start)
        try:
            yield
        finally:
            await to_thread.run_sync(stop, workers)

    app = FastAPI(title="Conveyor", version=conveyor.__version__, lifespan=lifespan, docs_url=None, openapi_url=None,
                  redoc_url=None)
    app.state.conveyor = state
    app.state.registry = registry
    setattr(app.state, FLUX_TARGETS, environments_on)
    setattr(app.state, RUNNING_IMAGES, images_running)
    install_error_handlers(app)
    install_docs(app)  # /openapi.json and /docs follow the anonymous-read setting
    app.include_router(core_router)
    app.include_router(settings_router)
    app.include_router(forge_router)
    app.include_router(clusters_router)
    app.include_router(flux_router)
    app.include_router(pipelines_router)
    app.include_router(runner_router)
    app.include_router(delivery_router)
    app.include_router(delivery_secrets_router)
    app.mount("/git", GitHttpApp(state))
    # The OCI Distribution API: its own ASGI app, for spec-exact errors and streaming.
    app.include_router(registry_router)
    app.add_middleware(RegistryDispatch, registry=registry)
    # Outermost: size, NUL, 64-bit and JSON rules for everything but /v2 and /git (core/limits.py).
    app.add_middleware(RequestGuard, problem=problem_response)
    app.add_middleware(SecurityHeaders)  # CSP, frame-ancestors, nosniff, referrer (core/headers.py)

    @app.get("/healthz", tags=["core"])
    def healthz() -> JSONResponse:
        with db.session() as s:
            from sqlalchemy import text

            s.execute(text("SELECT 1"))
        return JSONResponse({"status": "ok", "version": conveyor.__version__})

    # The dashboard last: its routes at / must not shadow the API or the /git and /v2 mounts.
    install_web(app)

    return app

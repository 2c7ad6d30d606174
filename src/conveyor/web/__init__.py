"""The dashboard: server-rendered pages at ``/`` for promotions, PRs, runs, clusters and the registry.

Public interface for the composition root: ``install(app)``, called after every API route and mount.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from conveyor.core import NotFound
from conveyor.web.assets import STATIC, htmx_path
from conveyor.web.pages import board, clusters, forge, registry, runs, session
from conveyor.web.routing import PageRoute

STATIC_PREFIX = "/ui/static"


def router() -> APIRouter:
    r = APIRouter(route_class=PageRoute, include_in_schema=False)
    for module in (session, board, forge, runs, clusters, registry):
        r.include_router(module.router)
    return r


def install(app: FastAPI) -> None:
    @app.get(f"{STATIC_PREFIX}/vendor/htmx.min.js", include_in_schema=False)
    def htmx() -> Response:
        path = htmx_path()
        if path is None:
            raise NotFound("htmx is not installed on this server (scripts/setup.sh installs it)")
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})

    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(router())


__all__ = ["install", "router"]

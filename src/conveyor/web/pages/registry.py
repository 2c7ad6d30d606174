"""The registry: repositories, tags, digests, sizes, and which environment runs which digest."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from conveyor.core import state_of
from conveyor.registry import repositories_with_tags
from conveyor.web import auth
from conveyor.web.pages.board import latest_by_app_env, running
from conveyor.web.render import page
from conveyor.web.routing import PageRoute

router = APIRouter(route_class=PageRoute)


@dataclass
class TagRow:
    tag: str
    digest: str
    size: int
    media_type: str
    updated_at: datetime
    locked: bool
    running_in: list[str] = field(default_factory=list)


def image_size(content: bytes, fallback: int) -> int:
    """Config plus layers for an image manifest; the manifest's own size for anything else."""
    try:
        doc = json.loads(content)
    except ValueError:
        return fallback
    if not isinstance(doc, dict) or "layers" not in doc:
        return fallback
    parts = [doc.get("config") or {}, *(doc.get("layers") or [])]
    return fallback + sum(int(p.get("size", 0)) for p in parts if isinstance(p, dict))


def running_digests(session: Session) -> dict[str, list[str]]:
    """digest -> ["app/env", ...] for the versions verified and running now."""
    out: dict[str, list[str]] = defaultdict(list)
    for (app, env), rows in sorted(latest_by_app_env(session).items()):
        r = running(rows)
        if r is not None:
            out[r.image_digest].append(f"{app}/{env}")
    return out


@router.get("/registry", response_class=HTMLResponse)
def registry(request: Request) -> Response:
    ws = auth.require(request)
    st = state_of(request)
    with st.db.session() as s:
        running = running_digests(s)
        listing = [(repo, [TagRow(name, digest, image_size(content, msize), media, updated, locked,
                                  running.get(digest, []))
                           for name, updated, locked, digest, msize, media, content in tags])
                   for repo, tags in repositories_with_tags(s)]
        return page(request, "registry.html", ws, repos=listing)

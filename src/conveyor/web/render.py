"""Jinja2 templates and the small formatting filters the pages share."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import nh3
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from conveyor.core import utcnow
from conveyor.web.assets import htmx_available
from conveyor.web.auth import WebSession

TEMPLATES = Path(__file__).parent / "templates"


def short(sha: str | None, n: int = 10) -> str:
    if not sha:
        return ""
    return sha.split(":", 1)[-1][:n] if sha.startswith("sha256:") else sha[:n]


def ago(when: datetime | None) -> str:
    if when is None:
        return ""
    secs = (utcnow() - when).total_seconds()
    return f"{duration(secs)} ago" if secs >= 0 else "just now"


def duration(secs: float | None) -> str:
    if secs is None:
        return "–"
    secs = int(secs)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m {secs % 60}s"
    if secs < 86400:
        return f"{secs // 3600}h {secs % 3600 // 60}m"
    return f"{secs // 86400}d {secs % 86400 // 3600}h"


def size(n: int | None) -> str:
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


_API_RUN = re.compile(r"^(?:https?://[^/]+)?/api/v1/runs/(\d+)$")


def ui_link(url: str) -> str:
    """Links that statuses carry to the API, shown as the dashboard's page for the same thing."""
    m = _API_RUN.match(url)
    return f"/runs/{m.group(1)}" if m else url


_SAFE_SCHEMES = ("http", "https")
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])


def safe_url(url: str | None) -> str:
    """``url`` if a link to it is harmless (http, https or a path on this server), else "".

    Status ``target_url``s are user input: a ``javascript:`` URL rendered as a link runs in the
    dashboard's origin when clicked (issue 13)."""
    if not url:
        return ""
    url = url.strip()
    if url.startswith("/") and not url.startswith("//"):
        return url
    scheme, sep, rest = url.partition(":")
    return url if sep and scheme.lower() in _SAFE_SCHEMES and rest.startswith("//") else ""


def markdown(text: str | None) -> Markup:
    """PR and review bodies as every forge shows them: CommonMark (tables, strikethrough), raw HTML
    off, and the result sanitised by nh3 (links only to http, https and mailto)."""
    html = _markdown.render(text or "")
    return Markup(nh3.clean(html, url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow"))


def timestamp(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True,
                  lstrip_blocks=True)
env.filters.update(short=short, ago=ago, duration=duration, size=size, timestamp=timestamp, ui_link=ui_link,
                   safe_url=safe_url, markdown=markdown)


def page(request: Request, template: str, ws: WebSession | None, status: int = 200, **context: Any) -> HTMLResponse:
    html = env.get_template(template).render(
        request=request, user=ws.principal if ws else None, csrf=ws.csrf if ws else "",
        htmx=htmx_available(), path=request.url.path, **context,
    )
    return HTMLResponse(html, status_code=status)

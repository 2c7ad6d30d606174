"""``/openapi.json`` and ``/docs``, readable as the rest of the API is (issue 13).

FastAPI serves both to anyone by default; here they follow the anonymous-read setting: without
it a caller needs an API token (header) or a dashboard session. The Swagger UI page gets a CSP
of its own: its one inline script is allowed by hash, its assets from any https origin.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from conveyor.core import Unauthorized, state_of
from conveyor.core.http import get_principal
from conveyor.web.auth import current as web_session

_INLINE = re.compile(r"<script>(.*?)</script>", re.S)


def _may_read(request: Request) -> None:
    st = state_of(request)
    if st.settings.anonymous_read:
        return
    principal = get_principal(request)  # raises 401 for wrong credentials
    if principal.anonymous and web_session(request) is None:
        raise Unauthorized("the API description needs an API token or a dashboard session",
                           rule="auth.token-required")


def _docs_csp(html: str) -> str:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in _INLINE.findall(html)
    )
    return (f"default-src 'self'; script-src 'self' https: {hashes}; style-src 'self' https:; "
            "img-src 'self' https: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")


def install_docs(app: FastAPI) -> None:
    """Call on an app created with ``docs_url=None, openapi_url=None``."""

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> JSONResponse:
        _may_read(request)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        _may_read(request)
        page = get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")
        html = bytes(page.body).decode()
        return HTMLResponse(html, headers={"Content-Security-Policy": _docs_csp(html)})

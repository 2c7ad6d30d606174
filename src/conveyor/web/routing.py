"""Page routes answer in HTML: refusals as an error page, a missing session as a redirect to sign in."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from conveyor.core import ConveyorError
from conveyor.web import auth
from conveyor.web.render import page


class PageRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            start = time.perf_counter()
            try:
                resp = await handler(request)
                # Server time of the page, for the browser's dev tools and the render benchmark.
                resp.headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - start):.1f}"
                return resp
            except auth.LoginRequired:
                if request.method != "GET":
                    return RedirectResponse("/login", status_code=303)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)
            except auth.CsrfRefused:
                err = ConveyorError("the form's CSRF token does not match your session; reload the page and retry",
                                    rule="csrf.token")
                return await run_in_threadpool(_error_page, request, err, 403)
            except ConveyorError as exc:
                return await run_in_threadpool(_error_page, request, exc, exc.status)

        return route


def _error_page(request: Request, error: ConveyorError, status: int) -> Response:
    """The error page names who is signed in: a database read, so never on the event loop."""
    return page(request, "error.html", auth.current(request), status=status, error=error)

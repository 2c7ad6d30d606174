"""Sign in and sign out."""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from conveyor.core import ConveyorError
from conveyor.web import auth
from conveyor.web.render import page
from conveyor.web.routing import PageRoute

router = APIRouter(route_class=PageRoute)
LOGIN_CSRF = "conveyor_login_csrf"


def _safe_next(value: str) -> str:
    # Only local paths: never an open redirect to another site.
    return value if value.startswith("/") and not value.startswith("//") else "/"


def _login_page(request: Request, next_url: str, status: int = 200, error: ConveyorError | None = None) -> Response:
    # Before a session exists, CSRF is a double-submit cookie.
    token = secrets.token_urlsafe(24)
    resp = page(request, "login.html", None, status=status, login_csrf=token, next=_safe_next(next_url), error=error)
    resp.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="lax", path="/login")
    return resp


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    return _login_page(request, next)


@router.post("/login")
def login(request: Request, fields: auth.FormFields) -> Response:
    next_url = _safe_next(fields.get("next", "/"))
    cookie = request.cookies.get(LOGIN_CSRF, "")
    if not cookie or not hmac.compare_digest(cookie, fields.get("csrf", "")):
        return _login_page(request, next_url, 403, ConveyorError("the sign-in form expired; try again",
                                                                 rule="csrf.token"))
    try:
        auth.check_token_shape(fields.get("token", ""))
        _, value = auth.sign_in(request, fields["token"])
    except ConveyorError as exc:
        return _login_page(request, next_url, 401, exc)
    resp = RedirectResponse(next_url, status_code=303)
    resp.set_cookie(auth.COOKIE, value, max_age=auth.MAX_AGE, httponly=True, samesite="lax", path="/",
                    secure=request.url.scheme == "https")
    resp.delete_cookie(LOGIN_CSRF, path="/login")
    return resp


@router.post("/logout")
def logout(request: Request, fields: auth.FormFields) -> Response:
    ws = auth.require_post(request, fields)
    auth.sign_out(request, ws)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(auth.COOKIE, path="/")
    return resp

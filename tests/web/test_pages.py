"""The dashboard over plain HTTP: sign-in, sessions, CSRF, and the same rules as the API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.forge.helpers import new_repo
from tests.support.server import ServerHandle
from tests.web.demo import Demo
from tests.web.session import csrf_of, signed_in

PAGES = ["/", "/repos", "/runs", "/clusters", "/registry"]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def web_server(request: pytest.FixtureRequest, server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    """Plain-HTTP page tests on both databases (the browser tests use SQLite only)."""
    return server_factory(request.param)


@pytest.mark.parametrize("path", [*PAGES, "/apps/x", "/repos/x/pulls/1", "/runs/1"])
def test_pages_need_a_session(web_server: ServerHandle, path: str) -> None:
    r = httpx.get(web_server.url + path)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=" + path.split("?")[0])


def test_api_and_mounts_are_not_shadowed(web_server: ServerHandle) -> None:
    assert httpx.get(web_server.url + "/api/v1/repos").status_code == 401
    assert httpx.get(web_server.url + "/v2/").status_code == 401
    assert httpx.get(web_server.url + "/healthz").json()["status"] == "ok"


def test_session_cookie_is_signed_httponly_and_lax(web_server: ServerHandle) -> None:
    c = httpx.Client(base_url=web_server.url)
    r = c.post("/login", data={"token": web_server.admin_token, "csrf": csrf_of(c.get("/login").text)})
    cookie = r.headers["set-cookie"]
    assert "conveyor_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    # A tampered cookie is no session.
    value = c.cookies["conveyor_session"]
    forged = httpx.get(web_server.url + "/repos", cookies={"conveyor_session": value[:-3] + "AAA"})
    assert forged.status_code == 303


def test_bad_token_and_missing_login_csrf_are_refused(web_server: ServerHandle) -> None:
    c = httpx.Client(base_url=web_server.url)
    r = c.post("/login", data={"token": "cvy_nope", "csrf": csrf_of(c.get("/login").text)})
    assert r.status_code == 401 and "invalid or revoked API token" in r.text
    r = httpx.post(web_server.url + "/login", data={"token": web_server.admin_token, "csrf": "x"})
    assert r.status_code == 403 and "conveyor_session" not in r.headers.get("set-cookie", "")


def test_next_is_only_a_local_path(web_server: ServerHandle) -> None:
    c = httpx.Client(base_url=web_server.url)
    form = c.get("/login", params={"next": "//evil.example/x"}).text
    r = c.post("/login", data={"token": web_server.admin_token, "csrf": csrf_of(form), "next": "//evil.example/x"})
    assert r.headers["location"] == "/"


def test_every_page_renders_for_a_signed_in_user(demo: Demo) -> None:
    c = signed_in(demo.server, demo.server.admin_token)
    for path in [*PAGES, f"/apps/{demo.app}", f"/repos/{demo.gitops}", f"/repos/{demo.gitops}/pulls/{demo.qa_pr}"]:
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:2000])
        assert '<html lang="en">' in r.text and "<h1>" in r.text.replace("<h1 ", "<h1>")


def test_board_shows_running_versions_and_what_the_qa_promotion_waits_for(demo: Demo) -> None:
    html = signed_in(demo.server, demo.server.admin_token).get(f"/apps/{demo.app}").text
    board = html[html.index('id="board"'):html.index("DORA metrics")]
    dev, qa, prod = (board[board.index(f'id="env-{e}"'):] for e in ("dev", "qa", "prod"))
    assert "1.2.0" in dev[:dev.index("Pending")] and "Ready" in dev[:dev.index("Pending")]
    assert "1.1.0" in qa[:qa.index("Pending")]  # the failed 1.1.0 was followed by a verified one
    assert "1.0.0" in prod[:prod.index("Pending")]
    pending = qa[qa.index("Pending"):qa.index('id="env-prod"')]
    assert f"PR #{demo.qa_pr}" in pending and "needs 1 approval(s) from cluster-admin or reviewer" in pending


def test_pr_page_names_its_promotion_and_links_checks_to_pages(demo: Demo) -> None:
    html = signed_in(demo.server, demo.server.admin_token).get(f"/repos/{demo.gitops}/pulls/{demo.qa_pr}").text
    assert f'Promotion of <a href="/apps/{demo.app}">{demo.app}</a>' in html
    assert "1.2.0" in html and "Rendered manifests" in html and f"rendered/{demo.app}.yaml" in html
    assert "dry run: 1 object changed" in html
    diff = signed_in(demo.server, demo.server.admin_token).get(f"/repos/{demo.gitops}/pulls/{demo.qa_pr}.diff")
    assert diff.status_code == 200 and diff.headers["content-type"].startswith("text/plain")
    assert f"+++ b/rendered/{demo.app}.yaml" in diff.text


def test_self_approval_is_refused_with_the_rule_and_nothing_is_recorded(demo: Demo) -> None:
    c = signed_in(demo.server, demo.author_token)
    url = f"/repos/{demo.gitops}/pulls/{demo.qa_pr}"
    r = c.post(f"{url}/review", data={"csrf": csrf_of(c.get(url).text), "action": "approve"})
    assert r.status_code == 403
    assert "review.no-self-approval" in r.text and "cannot approve it" in r.text
    reviews = demo.server.api().get(f"/api/v1/repos/{demo.gitops}/pulls/{demo.qa_pr}").json()["reviews"]
    assert not [rv for rv in reviews if rv["reviewer"] == demo.author]


def test_posts_without_the_session_csrf_token_are_refused(demo: Demo) -> None:
    c = signed_in(demo.server, demo.reviewer_token)
    url = f"/repos/{demo.gitops}/pulls/{demo.qa_pr}"
    r = c.post(f"{url}/review", data={"csrf": "forged", "action": "comment", "body": "hi"})
    assert r.status_code == 403 and "csrf.token" in r.text
    other = signed_in(demo.server, demo.author_token)  # another session's token is no good either
    r = c.post(f"{url}/review", data={"csrf": csrf_of(other.get(url).text), "action": "comment", "body": "hi"})
    assert r.status_code == 403
    reviews = demo.server.api().get(f"/api/v1/repos/{demo.gitops}/pulls/{demo.qa_pr}").json()["reviews"]
    assert not [rv for rv in reviews if rv["body"] == "hi"]


def test_merge_button_follows_the_api_rules(demo: Demo) -> None:
    c = signed_in(demo.server, demo.author_token)
    url = f"/repos/{demo.gitops}/pulls/{demo.qa_pr}"
    r = c.post(f"{url}/merge", data={"csrf": csrf_of(c.get(url).text), "method": "merge"})
    assert r.status_code == 422 and "review.required-approvals" in r.text
    assert demo.server.api().get(f"/api/v1/repos/{demo.gitops}/pulls/{demo.qa_pr}").json()["state"] == "open"


def test_registry_shows_which_environment_runs_which_digest(demo: Demo) -> None:
    html = signed_in(demo.server, demo.server.admin_token).get("/registry").text
    section = html[html.index(demo.image_repo):]
    row = section[section.index(">1.0.0<"):]
    row = row[:row.index("</tr>")]
    assert f"{demo.app}/prod" in row and demo.digests["1.0.0"][:19] in row
    row12 = section[section.index(">1.2.0<"):]
    assert f"{demo.app}/dev" in row12[:row12.index("</tr>")]


def test_sign_out_ends_the_session(demo: Demo) -> None:
    c = signed_in(demo.server, demo.server.admin_token)
    html = c.get("/repos").text
    r = c.post("/logout", data={"csrf": csrf_of(html)})
    assert r.status_code == 303
    assert c.get("/repos").status_code == 303


def test_pr_bodies_render_as_markdown_and_only_http_links(demo: Demo, tmp_path: Path) -> None:
    server = demo.server
    wc = new_repo(server, tmp_path)
    wc.git("checkout", "-q", "-b", "md")
    sha = wc.commit_file("m.txt", "m\n")
    wc.push("md")
    api = server.api()
    body = "## Plan\n\n- **bold** step\n\n<script>alert(1)</script>\n\n[x](javascript:alert(2))"
    pr = api.post(f"/api/v1/repos/{wc.repo}/pulls", json={"source": "md", "target": "main", "title": "MD",
                                                          "body": body}).json()
    for ctx, url in (("evil", "javascript:alert(3)"), ("data", "data:text/html,x"), ("ci", "https://ci.example/1")):
        api.post(f"/api/v1/repos/{wc.repo}/statuses/{sha}", json={"state": "success", "context": ctx,
                                                                   "target_url": url}).raise_for_status()
    html = signed_in(server, server.admin_token).get(f"/repos/{wc.repo}/pulls/{pr['number']}").text
    assert "<h2>Plan</h2>" in html and "<strong>bold</strong>" in html
    assert "<script>alert" not in html and 'href="javascript' not in html and 'href="data:' not in html
    assert '<a href="https://ci.example/1">ci</a>' in html and "evil" in html


@pytest.mark.parametrize("path", ["/", "/login", "/repos", "/api/v1/repos", "/v2/", "/healthz", "/git/x.git/info/refs",
                                  "/ui/static/app.js", "/nope"])
def test_every_response_carries_the_security_headers(web_server: ServerHandle, path: str) -> None:
    r = httpx.get(web_server.url + path)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"


def test_api_description_follows_the_anonymous_read_setting(
    web_server: ServerHandle, server_factory: Callable[..., ServerHandle]
) -> None:
    for path in ("/openapi.json", "/docs"):
        r = httpx.get(web_server.url + path)
        assert r.status_code == 401 and r.json()["rule"] == "auth.token-required", (path, r.text)
        assert web_server.api().get(path).status_code == 200
        assert signed_in(web_server, web_server.admin_token).get(path).status_code == 200
    assert "paths" in web_server.api().get("/openapi.json").json()
    docs = web_server.api().get("/docs")
    assert "'sha256-" in docs.headers["content-security-policy"] and "unsafe-inline" not in docs.text
    public = server_factory("sqlite", CONVEYOR_ANONYMOUS_READ="1")
    assert httpx.get(public.url + "/openapi.json").status_code == 200

"""The dashboard in a real browser: Playwright driving Debian's headless Chromium against a live server.

Screenshots of every page go to test-output/screenshots/ for review.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api as playwright

from tests.pipelines.helpers import repo_with_pipeline, wait_for_run
from tests.support.server import ServerHandle
from tests.web.demo import Demo

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
WAIT_MS = 60_000  # a patience limit for a loaded machine, not a timing assertion
playwright.expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: scripts/setup.sh installs it"
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A page whose browser console is watched: the dashboard must work under its
    Content-Security-Policy (no inline script or style), so any CSP refusal fails the test."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})  # type: ignore[attr-defined]
    refused: list[str] = []

    def console(m: playwright.ConsoleMessage) -> None:
        # A refusal to be framed (frame-ancestors) is the policy working, not a page breaking.
        if "Content Security Policy" in m.text and "frame-ancestors" not in m.text:
            refused.append(m.text)

    context.on("console", console)
    context.on("weberror", lambda e: refused.append(str(e.error)))
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    yield pg
    csp = pg.evaluate("() => document.querySelector('meta[http-equiv]') === null")
    context.close()
    assert csp, "CSP must come from the response header, not a meta tag"
    assert refused == [], f"the browser refused something under the CSP or a script failed: {refused}"


def shot(pg: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def sign_in(pg: object, server: ServerHandle, token: str, then: str = "/") -> None:
    pg.goto(f"{server.url}{then}")  # type: ignore[attr-defined]
    assert "/login" in pg.url  # type: ignore[attr-defined]
    pg.get_by_label("API token").fill(token)  # type: ignore[attr-defined]
    pg.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    pg.wait_for_url(f"{server.url}{then}")  # type: ignore[attr-defined]


def test_sign_in_board_and_approve_a_qa_pr(demo: Demo, page: object) -> None:
    pg: playwright.Page = page  # type: ignore[assignment]
    server = demo.server
    pg.goto(f"{server.url}/login")
    shot(pg, "01-login")
    # The author: the board, then her own qa PR, whose approval the rules refuse.
    sign_in(pg, server, demo.author_token)
    playwright.expect(pg.get_by_role("heading", name="Promotions")).to_be_visible()
    shot(pg, "02-apps")
    pg.get_by_role("link", name=demo.app, exact=True).click()
    qa = pg.locator("section.env", has=pg.get_by_role("heading", name="qa"))
    playwright.expect(qa).to_contain_text("1.2.0")
    playwright.expect(qa).to_contain_text("needs 1 approval(s)")
    shot(pg, "03-promotion-board")
    qa.get_by_role("link", name=f"PR #{demo.qa_pr}").click()
    playwright.expect(pg.get_by_role("heading", name="Rendered manifests")).to_be_visible()
    pg.get_by_role("button", name="Approve").click()
    alert = pg.get_by_role("alert")
    playwright.expect(alert).to_contain_text("review.no-self-approval")
    playwright.expect(alert).to_contain_text("cannot approve it")
    shot(pg, "04-pr-self-approval-refused")
    pg.get_by_role("button", name="Sign out").click()
    pg.wait_for_url("**/login")
    # A reviewer keeps the board open in one tab and approves from the PR page in another.
    pr_path = f"/repos/{demo.gitops}/pulls/{demo.qa_pr}"
    sign_in(pg, server, demo.reviewer_token, f"/apps/{demo.app}")
    assert pg.evaluate("typeof window.htmx") == "object", "htmx is not served (scripts/setup.sh installs it)"
    board = pg
    qa = board.locator("section.env", has=board.get_by_role("heading", name="qa"))
    playwright.expect(qa).to_contain_text("needs 1 approval(s)")
    pg = board.context.new_page()
    pg.goto(server.url + pr_path)
    pg.get_by_label("Comment").fill("Checked the rendered Deployment; good to go.")
    pg.get_by_role("button", name="Approve").click()
    playwright.expect(pg.get_by_role("status")).to_contain_text("You approved")
    playwright.expect(pg.locator("aside")).to_contain_text(demo.reviewer)
    # CD merges an approved GitOps PR by itself (the approvals are the environment's gate), so
    # the page may already show it merged.
    playwright.expect(pg.locator("aside")).to_contain_text(re.compile("Every rule is satisfied|merged"))
    shot(pg, "05-pr-approved")
    detail = server.api().get(f"/api/v1/repos/{demo.gitops}/pulls/{demo.qa_pr}").json()
    assert detail["mergeability"]["approvals"] == [demo.reviewer]
    # The open board catches up by itself (htmx polls it): CD merged the approved PR and the
    # promotion now waits for the cluster's agent.
    playwright.expect(qa).to_contain_text("apply by the agent of cluster")
    board.bring_to_front()
    shot(board, "06-board-after-approval")


def test_other_pages_render(demo: Demo, page: object) -> None:
    pg: playwright.Page = page  # type: ignore[assignment]
    sign_in(pg, demo.server, demo.server.admin_token)
    for path, name, heading in [("/repos", "07-repositories", "Repositories"),
                                (f"/repos/{demo.gitops}", "08-repository", demo.gitops),
                                ("/registry", "09-registry", "Registry"),
                                ("/clusters", "10-clusters", "Clusters and agents"),
                                ("/runs", "11-runs", "Pipeline runs")]:
        pg.goto(demo.server.url + path)
        playwright.expect(pg.get_by_role("heading", level=1)).to_contain_text(heading)
        shot(pg, name)
    pg.goto(demo.server.url + "/registry")
    playwright.expect(pg.locator("tr", has_text="1.0.0")).to_contain_text(f"{demo.app}/prod")
    pg.goto(demo.server.url + "/clusters")
    playwright.expect(pg.get_by_role("heading", name="nonprod")).to_be_visible()
    playwright.expect(pg.locator("table").first).to_contain_text("Ready")
    # Every response carries the CSP header the browser enforced above.
    response = pg.goto(demo.server.url + "/")
    assert response is not None and "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_the_dashboard_cannot_be_framed(demo: Demo, page: object, tmp_path: Path) -> None:
    """Clickjacking: another origin that frames the PR page gets nothing rendered."""
    pg: playwright.Page = page  # type: ignore[assignment]
    sign_in(pg, demo.server, demo.server.admin_token)
    evil = tmp_path / "evil.html"
    evil.write_text(f'<iframe id="f" src="{demo.server.url}/repos/{demo.gitops}/pulls/{demo.qa_pr}"></iframe>')
    pg.goto(evil.as_uri())
    # Chromium replaces a frame it refuses to render (frame-ancestors / X-Frame-Options) with
    # its error page; without the headers the frame shows the dashboard (its login form, as the
    # session cookie is SameSite=Lax and not sent into a cross-site frame).
    child = pg.frames[1]
    for _ in range(100):
        if child.url.startswith("chrome-error://"):
            break
        pg.wait_for_timeout(100)
    assert child.url.startswith("chrome-error://"), child.url
    playwright.expect(pg.frame_locator("#f").get_by_role("button", name="Sign in")).to_have_count(0)


def test_follow_a_live_log_until_the_run_finishes(demo: Demo, page: object, tmp_path: Path) -> None:
    pg: playwright.Page = page  # type: ignore[assignment]
    server = demo.server
    # The step holds until the test releases it, so the page is open while the run is live. Steps run in
    # containers that see the run's workspace at /workspace: the test touches the file on the runner's side.
    pipeline = ("ci:\n  - name: build\n    run: echo started; "
                "while [ ! -e /workspace/release ]; do sleep 0.1; done; "
                "for i in 1 2 3; do echo line-$i; sleep 0.2; done\n"
                "  - name: test\n    run: echo tests-passed\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci", state="running")
    release = server.data_dir / "pipelines" / "workspaces" / f"run-{run['id']}" / "src" / "release"
    sign_in(pg, server, demo.server.admin_token, f"/runs/{run['id']}")
    log = pg.locator("pre#log")
    assert log.get_attribute("data-log-stream") == f"/ui/runs/{run['id']}/events"
    # The first step pulls its image into the runner's fresh vfs store first: seen taking over a minute
    # with the test command's parallel workers busy, while the page streamed the pull's progress.
    playwright.expect(log).to_contain_text("started", timeout=3 * WAIT_MS)
    shot(pg, "12-run-live")
    release.touch()
    playwright.expect(pg.locator("#run-state[data-finished=true]")).to_have_text("success")
    text = log.inner_text()
    assert text.index("line-1") < text.index("line-2") < text.index("line-3") < text.index("tests-passed")
    assert text.count("line-3") == 1  # streamed chunks are appended once, after what the page showed
    # The steps table follows too, without a reload.
    playwright.expect(pg.locator("#steps tr", has_text="test")).to_contain_text("success")
    shot(pg, "13-run-finished")

"""Repositories and pull requests: diffs, checks, reviews, and the same review/merge rules as the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from conveyor.core import ConveyorError, Permission, state_of
from conveyor.delivery import promotion_of_pr
from conveyor.forge import (
    Repository,
    bare,
    combined_status,
    evaluate,
    get_pr,
    get_repo,
    list_prs,
    list_repos,
    merge_pr,
    open_pr_counts,
    review_pr,
)
from conveyor.web import auth
from conveyor.web.render import page
from conveyor.web.routing import PageRoute

router = APIRouter(route_class=PageRoute)
RENDERED_PREFIX = "rendered/"
DIFF_CHECK = "conveyor/diff"
REVIEW_STATES = {"approve": "approved", "request_changes": "changes_requested", "comment": "commented"}


MAX_DIFF_LINES = 1500  # per file on the page; the whole diff stays one link away


@dataclass(frozen=True)
class FileDiff:
    path: str
    lines: list[tuple[str, str]]  # (css class, text)
    hidden: int = 0  # lines left off the page


def split_diff(text: str) -> list[FileDiff]:
    """A unified diff as files, each line tagged for colouring."""
    files: list[FileDiff] = []
    for block in ("\n" + text).split("\ndiff --git ")[1:]:
        header, _, _ = block.partition("\n")
        path = header.split(" b/", 1)[-1] if " b/" in header else header
        lines = [("file", "diff --git " + header)]
        for line in block.split("\n")[1:]:
            kind = ""
            if line.startswith("@@"):
                kind = "hunk"
            elif line.startswith("+") and not line.startswith("+++"):
                kind = "add"
            elif line.startswith("-") and not line.startswith("---"):
                kind = "del"
            lines.append((kind, line))
        hidden = max(0, len(lines) - MAX_DIFF_LINES)
        files.append(FileDiff(path, lines[:MAX_DIFF_LINES], hidden))
    return files


@router.get("/repos", response_class=HTMLResponse)
def repos(request: Request) -> Response:
    ws = auth.require(request)
    st = state_of(request)
    with st.db.session() as s:
        rows = []
        counts = open_pr_counts(s)
        for r in list_repos(s):
            rows.append({"repo": r, "open_prs": counts.get(r.id, 0)})
        return page(request, "repos.html", ws, rows=rows)


@router.get("/repos/{name}", response_class=HTMLResponse)
def repo_page(name: str, request: Request, state: str = "open") -> Response:
    ws = auth.require(request)
    st = state_of(request)
    with st.db.session() as s:
        repo = get_repo(s, name)
        git = bare(st.settings, repo)
        branches = git.branches()
        prs = list_prs(s, repo, None if state == "all" else state)
        return page(request, "repo.html", ws, repo=repo, branches=sorted(branches.items()), prs=prs, state=state,
                    clone_url=f"{st.settings.base_url}/git/{repo.name}.git")


def _pr_context(s: Session, request: Request, repo: Repository, number: int) -> dict[str, Any]:
    st = state_of(request)
    pr = get_pr(s, repo, number)
    git = bare(st.settings, repo)
    base = pr.base_before_merge or git.merge_base(pr.base_sha, pr.head_sha) or pr.base_sha
    files = split_diff(git.diff(base, pr.head_sha))
    checks = combined_status(s, repo, pr.head_sha)
    return {
        "repo": repo,
        "pr": pr,
        "commits": git.commits_between(base, pr.head_sha),
        "stats": git.diffstat(base, pr.head_sha),
        "templates": [f for f in files if not f.path.startswith(RENDERED_PREFIX)],
        "rendered": [f for f in files if f.path.startswith(RENDERED_PREFIX)],
        "checks": checks,
        "dry_run": checks.by_context().get(DIFF_CHECK),
        "merge": evaluate(s, st.settings, repo, pr),
        "reviews": sorted(pr.reviews, key=lambda r: r.created_at),
        "promotion": promotion_of_pr(s, repo.name, number),
    }


def _pr_page(request: Request, ws: auth.WebSession, name: str, number: int, status: int = 200,
             **extra: Any) -> Response:
    with state_of(request).db.session() as s:
        repo = get_repo(s, name)
        ctx = _pr_context(s, request, repo, number)
        return page(request, "pull.html", ws, status=status, **ctx, **extra)


@router.get("/repos/{name}/pulls/{number}.diff", response_class=PlainTextResponse)
def pull_diff(name: str, number: int, request: Request) -> Response:
    auth.require(request)
    st = state_of(request)
    with st.db.session() as s:
        repo = get_repo(s, name)
        pr = get_pr(s, repo, number)
        git = bare(st.settings, repo)
        base = pr.base_before_merge or git.merge_base(pr.base_sha, pr.head_sha) or pr.base_sha
        return PlainTextResponse(git.diff(base, pr.head_sha))


@router.get("/repos/{name}/pulls/{number}", response_class=HTMLResponse)
def pull_page(name: str, number: int, request: Request, done: str = "") -> Response:
    ws = auth.require(request)
    notices = {"approved": "You approved this pull request.", "changes_requested": "You requested changes.",
               "commented": "Your comment was added.", "merged": "Merged."}
    return _pr_page(request, ws, name, number, notice=notices.get(done))


@router.post("/repos/{name}/pulls/{number}/review")
def review(name: str, number: int, request: Request, form: auth.FormFields) -> Response:
    ws = auth.require_post(request, form)
    st = state_of(request)
    action = form.get("action", "")
    try:
        ws.principal.require(Permission.WRITE)
        if action not in REVIEW_STATES:
            raise ConveyorError("unknown review action", rule="review.state")
        with st.db.session() as s:
            repo = get_repo(s, name)
            pr = get_pr(s, repo, number)
            review_pr(s, st.settings, ws.principal, repo, pr, state=REVIEW_STATES[action], body=form.get("body", ""))
    except ConveyorError as exc:
        return _pr_page(request, ws, name, number, status=exc.status, error=exc, body=form.get("body", ""))
    return RedirectResponse(f"/repos/{name}/pulls/{number}?done={REVIEW_STATES[action]}", status_code=303)


@router.post("/repos/{name}/pulls/{number}/merge")
def merge(name: str, number: int, request: Request, form: auth.FormFields) -> Response:
    ws = auth.require_post(request, form)
    st = state_of(request)
    try:
        ws.principal.require(Permission.WRITE)
        merge_pr(st.db, st.settings, ws.principal, name, number, form.get("method", "merge"))
    except ConveyorError as exc:
        return _pr_page(request, ws, name, number, status=exc.status, error=exc)
    return RedirectResponse(f"/repos/{name}/pulls/{number}?done=merged", status_code=303)

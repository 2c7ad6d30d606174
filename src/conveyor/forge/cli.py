"""Forge commands: repositories, protection, pull requests, statuses, webhooks."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from conveyor.core.client import console, request, say

repo_app = typer.Typer(help="Git repositories and branch protection.", no_args_is_help=True)
pr_app = typer.Typer(help="Pull requests.", no_args_is_help=True)
hook_app = typer.Typer(help="Webhooks.", no_args_is_help=True)
status_app = typer.Typer(help="Commit statuses.", no_args_is_help=True)


@repo_app.command("create")
def repo_create(
    name: str = typer.Argument(..., help="The new repository's name"),
    default_branch: str = typer.Option("main", "--default-branch", help="The branch HEAD names"),
) -> None:
    """Create an empty repository; prints its clone URL."""
    out = request("POST", "/api/v1/repos", json_body={"name": name, "default_branch": default_branch})
    say(f"created {out['name']}: {out['clone_url']}")


@repo_app.command("list")
def repo_list() -> None:
    """The repositories: name, default branch, clone URL, creator."""
    table = Table("name", "default branch", "clone URL", "created by")
    for r in request("GET", "/api/v1/repos"):
        table.add_row(r["name"], r["default_branch"], r["clone_url"], r["created_by"])
    console.print(table)


@repo_app.command("delete")
def repo_delete(
    name: str = typer.Argument(..., help="The repository to delete"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
) -> None:
    """Delete a repository and all its history (asks first unless --yes)."""
    if not yes:
        typer.confirm(f"Delete repository '{name}' and all its history?", abort=True)
    request("DELETE", f"/api/v1/repos/{name}")
    say(f"deleted {name}")


@repo_app.command("protect")
def repo_protect(
    name: str = typer.Argument(..., help="The repository"),
    branch: str = typer.Argument(..., help="The branch to protect"),
    approvals: int = typer.Option(0, "--approvals", help="Approving reviews a merge needs"),
    require_check: list[str] = typer.Option([], "--require-check",
                                            help="A status context that must succeed (repeatable)"),
    approver_role: list[str] = typer.Option([], "--approver-role",
                                            help="Only approvals from this role count (repeatable)"),
    no_self_approval: bool = typer.Option(False, "--no-self-approval",
                                          help="The PR's author's own approval does not count"),
) -> None:
    """Protect a branch: no direct or force pushes; merges only through PRs meeting these rules."""
    out = request(
        "PUT",
        f"/api/v1/repos/{name}/protection/{branch}",
        json_body={
            "approvals": approvals,
            "required_checks": require_check,
            "approver_roles": approver_role,
            "no_self_approval": no_self_approval,
        },
    )
    say(
        f"protected {name}:{out['branch']} (approvals={out['approvals']}, checks={out['required_checks']}, "
        f"roles={out['approver_roles']}, no-self-approval={out['no_self_approval']})"
    )


@repo_app.command("unprotect")
def repo_unprotect(
    name: str = typer.Argument(..., help="The repository"),
    branch: str = typer.Argument(..., help="The protected branch"),
) -> None:
    """Remove a branch's protection: direct pushes are allowed again."""
    request("DELETE", f"/api/v1/repos/{name}/protection/{branch}")
    say(f"unprotected {name}:{branch}")


@pr_app.command("create")
def pr_create(
    repo: str = typer.Argument(..., help="The repository"),
    source: str = typer.Option(..., "--from", help="The branch with the changes"),
    target: str = typer.Option(..., "--to", help="The branch to merge into"),
    title: str = typer.Option(..., "--title", help="The PR's title"),
    body: str = typer.Option("", "--body", help="The PR's description"),
) -> None:
    """Open a pull request; prints its number."""
    out = request(
        "POST", f"/api/v1/repos/{repo}/pulls",
        json_body={"source": source, "target": target, "title": title, "body": body},
    )
    say(out["number"])


@pr_app.command("list")
def pr_list(
    repo: str = typer.Argument(..., help="The repository"),
    state: str = typer.Option(None, "--state", help="open | merged | closed (default: all)"),
) -> None:
    """A repository's pull requests: number, title, author, branches, state."""
    table = Table("#", "title", "author", "from", "to", "state")
    for p in request("GET", f"/api/v1/repos/{repo}/pulls", params={"state": state} if state else None):
        table.add_row(str(p["number"]), p["title"], p["author"], p["source_branch"], p["target_branch"], p["state"])
    console.print(table)


def _print_pr(p: dict[str, Any]) -> None:
    m = p["mergeability"]
    console.print(Text(f"#{p['number']} {p['title']}", style="bold"), Text(f" ({p['state']})"))
    say(f"{p['author']} wants to merge {p['source_branch']} into {p['target_branch']}")
    say(f"head {p['head_sha']}  base {p['base_sha']}")
    if p["merge_commit_sha"]:
        say(f"merged as {p['merge_commit_sha']} by {p['merged_by']} ({p['merge_method']})")
    if p["body"]:
        say(p["body"])
    console.print(f"\n[bold]commits[/] ({len(p['commits'])})")
    for c in p["commits"]:
        say(f"  {c['sha'][:12]} {c['subject']}  — {c['author']}")
    added = sum(f["added"] or 0 for f in p["files"])
    deleted = sum(f["deleted"] or 0 for f in p["files"])
    console.print(f"\n[bold]files[/] ({len(p['files'])}, +{added} -{deleted})")
    for f in p["files"]:
        say(f"  {f['path']}  +{f['added'] if f['added'] is not None else 'bin'} -{f['deleted'] or 0}")
    console.print("\n[bold]reviews[/]")
    for r in p["reviews"]:
        flag = f" (dismissed: {r['dismissed_reason']})" if r["dismissed"] else ""
        say(f"  {r['reviewer']} ({r['role']}): {r['state']} on {r['head_sha'][:12]}{flag}")
    console.print(f"\n[bold]checks[/] ({p['checks']['state']})")
    for s in p["checks"]["statuses"]:
        say(f"  {s['context']}: {s['state']} {s['description']} {s['target_url']}")
    console.print(
        f"\n[bold]mergeable[/]: {'yes' if m['mergeable'] else 'no'} "
        f"(approvals {len(m['approvals'])}/{m['required_approvals']})"
    )
    for b in m["blockers"]:
        say(f"  - {b['message']} [{b['rule']}]")


@pr_app.command("show")
def pr_show(
    repo: str = typer.Argument(..., help="The repository"),
    number: int = typer.Argument(..., help="The pull request's number"),
) -> None:
    """A pull request: commits, diffstat, reviews, checks, and what blocks the merge."""
    _print_pr(request("GET", f"/api/v1/repos/{repo}/pulls/{number}"))


@pr_app.command("diff")
def pr_diff(
    repo: str = typer.Argument(..., help="The repository"),
    number: int = typer.Argument(..., help="The pull request's number"),
) -> None:
    """The pull request's diff against its target branch."""
    say(request("GET", f"/api/v1/repos/{repo}/pulls/{number}/diff"))


@pr_app.command("approve")
def pr_approve(
    repo: str = typer.Argument(..., help="The repository"),
    number: int = typer.Argument(..., help="The pull request's number"),
    message: str = typer.Option("", "-m", "--message", help="A comment with the approval"),
) -> None:
    """Approve the pull request's current head."""
    request("POST", f"/api/v1/repos/{repo}/pulls/{number}/reviews", json_body={"state": "approve", "body": message})
    say(f"approved #{number}")


@pr_app.command("request-changes")
def pr_request_changes(
    repo: str = typer.Argument(..., help="The repository"),
    number: int = typer.Argument(..., help="The pull request's number"),
    message: str = typer.Option(..., "-m", "--message", help="What should change"),
) -> None:
    """Request changes: the merge is blocked until the same reviewer approves."""
    request(
        "POST", f"/api/v1/repos/{repo}/pulls/{number}/reviews",
        json_body={"state": "request_changes", "body": message},
    )
    say(f"requested changes on #{number}")


@pr_app.command("merge")
def pr_merge(
    repo: str = typer.Argument(..., help="The repository"),
    number: int = typer.Argument(..., help="The pull request's number"),
    method: str = typer.Option("merge", "--method", help="merge | squash | ff"),
) -> None:
    """Merge the pull request if its branch's protection rules are met."""
    out = request("POST", f"/api/v1/repos/{repo}/pulls/{number}/merge", json_body={"method": method})
    say(f"merged #{number} into {out['target_branch']} as {out['merge_commit_sha']}")


@pr_app.command("close")
def pr_close(
    repo: str = typer.Argument(..., help="The repository"),
    number: int = typer.Argument(..., help="The pull request's number"),
) -> None:
    """Close the pull request without merging it."""
    request("POST", f"/api/v1/repos/{repo}/pulls/{number}/close")
    say(f"closed #{number}")


@pr_app.command("revert")
def pr_revert(
    repo: str = typer.Argument(..., help="The repository"),
    number: int = typer.Argument(..., help="The pull request's number"),
) -> None:
    """Open a new PR that reverts a merged one; prints its number."""
    out = request("POST", f"/api/v1/repos/{repo}/pulls/{number}/revert")
    say(out["number"])


@status_app.command("set")
def status_set(
    repo: str = typer.Argument(..., help="The repository"),
    sha: str = typer.Argument(..., help="The commit"),
    state: str = typer.Option(..., "--state", help="pending | success | failure | error"),
    context: str = typer.Option("default", "--context", help="The check's name (what protection requires)"),
    description: str = typer.Option("", "--description", help="A one-line summary"),
    target_url: str = typer.Option("", "--target-url", help="Where the details are"),
) -> None:
    """Set a commit status (a check) on a commit."""
    request(
        "POST", f"/api/v1/repos/{repo}/statuses/{sha}",
        json_body={"state": state, "context": context, "description": description, "target_url": target_url},
    )
    say(f"{context}: {state}")


@status_app.command("show")
def status_show(
    repo: str = typer.Argument(..., help="The repository"),
    ref: str = typer.Argument(..., help="A commit, branch or tag"),
) -> None:
    """A commit's combined status and each context's latest state."""
    out = request("GET", f"/api/v1/repos/{repo}/commits/{ref}/status")
    say(f"{out['sha']}: {out['state']}")
    for s in out["statuses"]:
        say(f"  {s['context']}: {s['state']} {s['description']}")


@hook_app.command("add")
def hook_add(
    repo: str = typer.Argument(..., help="The repository"),
    url: str = typer.Argument(..., help="Where deliveries are POSTed"),
    secret: str = typer.Option(..., "--secret", help="The HMAC key that signs each delivery"),
    events: str = typer.Option("push,pull_request,status", "--events", help="Comma-separated events to send"),
) -> None:
    """Add a webhook; prints its id."""
    out = request(
        "POST", f"/api/v1/repos/{repo}/hooks",
        json_body={"url": url, "secret": secret, "events": [e.strip() for e in events.split(",") if e.strip()]},
    )
    say(f"hook {out['id']}: {out['url']} {','.join(out['events'])}")


@hook_app.command("list")
def hook_list(repo: str = typer.Argument(..., help="The repository")) -> None:
    """A repository's webhooks."""
    table = Table("id", "url", "events", "active")
    for h in request("GET", f"/api/v1/repos/{repo}/hooks"):
        table.add_row(str(h["id"]), h["url"], ",".join(h["events"]), str(h["active"]))
    console.print(table)


@hook_app.command("deliveries")
def hook_deliveries(
    repo: str = typer.Argument(..., help="The repository"),
    hook_id: int = typer.Argument(..., help="The webhook's id"),
) -> None:
    """A webhook's recent deliveries: status, attempts, response code, error, duration."""
    table = Table("id", "event", "status", "attempts", "code", "error", "ms")
    for d in request("GET", f"/api/v1/repos/{repo}/hooks/{hook_id}/deliveries"):
        table.add_row(str(d["id"]), d["event"], d["status"], str(d["attempts"]), str(d["last_status_code"]),
                      d["last_error"] or "", str(d["duration_ms"]))
    console.print(table)


@hook_app.command("delete")
def hook_delete(
    repo: str = typer.Argument(..., help="The repository"),
    hook_id: int = typer.Argument(..., help="The webhook's id"),
) -> None:
    """Delete a webhook."""
    request("DELETE", f"/api/v1/repos/{repo}/hooks/{hook_id}")
    say(f"deleted hook {hook_id}")

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
def repo_create(name: str, default_branch: str = typer.Option("main", "--default-branch")) -> None:
    out = request("POST", "/api/v1/repos", json_body={"name": name, "default_branch": default_branch})
    say(f"created {out['name']}: {out['clone_url']}")


@repo_app.command("list")
def repo_list() -> None:
    table = Table("name", "default branch", "clone URL", "created by")
    for r in request("GET", "/api/v1/repos"):
        table.add_row(r["name"], r["default_branch"], r["clone_url"], r["created_by"])
    console.print(table)


@repo_app.command("delete")
def repo_delete(name: str, yes: bool = typer.Option(False, "--yes", "-y", help="do not ask")) -> None:
    if not yes:
        typer.confirm(f"Delete repository '{name}' and all its history?", abort=True)
    request("DELETE", f"/api/v1/repos/{name}")
    say(f"deleted {name}")


@repo_app.command("protect")
def repo_protect(
    name: str,
    branch: str,
    approvals: int = typer.Option(0, "--approvals"),
    require_check: list[str] = typer.Option([], "--require-check"),
    approver_role: list[str] = typer.Option([], "--approver-role"),
    no_self_approval: bool = typer.Option(False, "--no-self-approval"),
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
def repo_unprotect(name: str, branch: str) -> None:
    request("DELETE", f"/api/v1/repos/{name}/protection/{branch}")
    say(f"unprotected {name}:{branch}")


@pr_app.command("create")
def pr_create(
    repo: str,
    source: str = typer.Option(..., "--from"),
    target: str = typer.Option(..., "--to"),
    title: str = typer.Option(..., "--title"),
    body: str = typer.Option("", "--body"),
) -> None:
    """Open a pull request; prints its number."""
    out = request(
        "POST", f"/api/v1/repos/{repo}/pulls",
        json_body={"source": source, "target": target, "title": title, "body": body},
    )
    say(out["number"])


@pr_app.command("list")
def pr_list(repo: str, state: str = typer.Option(None, "--state", help="open | merged | closed")) -> None:
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
def pr_show(repo: str, number: int) -> None:
    _print_pr(request("GET", f"/api/v1/repos/{repo}/pulls/{number}"))


@pr_app.command("diff")
def pr_diff(repo: str, number: int) -> None:
    say(request("GET", f"/api/v1/repos/{repo}/pulls/{number}/diff"))


@pr_app.command("approve")
def pr_approve(repo: str, number: int, message: str = typer.Option("", "-m", "--message")) -> None:
    request("POST", f"/api/v1/repos/{repo}/pulls/{number}/reviews", json_body={"state": "approve", "body": message})
    say(f"approved #{number}")


@pr_app.command("request-changes")
def pr_request_changes(repo: str, number: int, message: str = typer.Option(..., "-m", "--message")) -> None:
    request(
        "POST", f"/api/v1/repos/{repo}/pulls/{number}/reviews",
        json_body={"state": "request_changes", "body": message},
    )
    say(f"requested changes on #{number}")


@pr_app.command("merge")
def pr_merge(
    repo: str, number: int, method: str = typer.Option("merge", "--method", help="merge | squash | ff")
) -> None:
    out = request("POST", f"/api/v1/repos/{repo}/pulls/{number}/merge", json_body={"method": method})
    say(f"merged #{number} into {out['target_branch']} as {out['merge_commit_sha']}")


@pr_app.command("close")
def pr_close(repo: str, number: int) -> None:
    request("POST", f"/api/v1/repos/{repo}/pulls/{number}/close")
    say(f"closed #{number}")


@pr_app.command("revert")
def pr_revert(repo: str, number: int) -> None:
    """Open a new PR that reverts a merged one; prints its number."""
    out = request("POST", f"/api/v1/repos/{repo}/pulls/{number}/revert")
    say(out["number"])


@status_app.command("set")
def status_set(
    repo: str,
    sha: str,
    state: str = typer.Option(..., "--state"),
    context: str = typer.Option("default", "--context"),
    description: str = typer.Option("", "--description"),
    target_url: str = typer.Option("", "--target-url"),
) -> None:
    request(
        "POST", f"/api/v1/repos/{repo}/statuses/{sha}",
        json_body={"state": state, "context": context, "description": description, "target_url": target_url},
    )
    say(f"{context}: {state}")


@status_app.command("show")
def status_show(repo: str, ref: str) -> None:
    out = request("GET", f"/api/v1/repos/{repo}/commits/{ref}/status")
    say(f"{out['sha']}: {out['state']}")
    for s in out["statuses"]:
        say(f"  {s['context']}: {s['state']} {s['description']}")


@hook_app.command("add")
def hook_add(
    repo: str,
    url: str,
    secret: str = typer.Option(..., "--secret"),
    events: str = typer.Option("push,pull_request,status", "--events"),
) -> None:
    out = request(
        "POST", f"/api/v1/repos/{repo}/hooks",
        json_body={"url": url, "secret": secret, "events": [e.strip() for e in events.split(",") if e.strip()]},
    )
    say(f"hook {out['id']}: {out['url']} {','.join(out['events'])}")


@hook_app.command("list")
def hook_list(repo: str) -> None:
    table = Table("id", "url", "events", "active")
    for h in request("GET", f"/api/v1/repos/{repo}/hooks"):
        table.add_row(str(h["id"]), h["url"], ",".join(h["events"]), str(h["active"]))
    console.print(table)


@hook_app.command("deliveries")
def hook_deliveries(repo: str, hook_id: int) -> None:
    table = Table("id", "event", "status", "attempts", "code", "error", "ms")
    for d in request("GET", f"/api/v1/repos/{repo}/hooks/{hook_id}/deliveries"):
        table.add_row(str(d["id"]), d["event"], d["status"], str(d["attempts"]), str(d["last_status_code"]),
                      d["last_error"] or "", str(d["duration_ms"]))
    console.print(table)


@hook_app.command("delete")
def hook_delete(repo: str, hook_id: int) -> None:
    request("DELETE", f"/api/v1/repos/{repo}/hooks/{hook_id}")
    say(f"deleted hook {hook_id}")

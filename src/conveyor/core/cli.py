"""Core commands: users and tokens."""

from __future__ import annotations

import typer
from rich.table import Table

from conveyor.core.client import console, request, say

user_app = typer.Typer(help="Users, roles and API tokens.", no_args_is_help=True)


@user_app.command("create")
def user_create(
    name: str = typer.Argument(..., help="User name (lowercase letters, digits, '.', '_', '-')"),
    role: str = typer.Option(..., "--role", help="developer | reviewer | cluster-admin | admin"),
) -> None:
    """Create a user and print its API token."""
    out = request("POST", "/api/v1/users", json_body={"name": name, "role": role})
    say(out["token"])


@user_app.command("list")
def user_list() -> None:
    """List users with their role, kind and whether they are disabled."""
    table = Table("name", "role", "kind", "disabled", "created")
    for u in request("GET", "/api/v1/users"):
        table.add_row(u["name"], u["role"], u["kind"], "yes" if u["disabled"] else "", u["created_at"])
    console.print(table)


@user_app.command("set")
def user_set(
    name: str = typer.Argument(..., help="User name"),
    role: str = typer.Option(None, "--role", help="New role: developer | reviewer | cluster-admin | admin"),
    disable: bool = typer.Option(False, "--disable", help="Disable the user: every token and session stops at once"),
    enable: bool = typer.Option(False, "--enable", help="Enable a disabled user again"),
) -> None:
    """Change a user's role, or disable or enable them (admin)."""
    body: dict[str, object] = {}
    if role:
        body["role"] = role
    if disable or enable:
        body["disabled"] = disable
    u = request("PATCH", f"/api/v1/users/{name}", json_body=body)
    say(f"{u['name']}: role {u['role']}{', disabled' if u['disabled'] else ''}")


@user_app.command("token")
def user_token(
    name: str = typer.Argument(..., help="User name (your own, or anyone's as an admin)"),
    description: str = typer.Option("", "--description", help="What the token is for"),
    expires_in_days: int = typer.Option(None, "--expires-in-days", help="Expire the token after this many days"),
) -> None:
    """Issue a new API token for a user and print it (shown once)."""
    body: dict[str, object] = {"description": description}
    if expires_in_days:
        body["expires_in_days"] = expires_in_days
    say(request("POST", f"/api/v1/users/{name}/tokens", json_body=body)["token"])


@user_app.command("tokens")
def user_tokens(name: str = typer.Argument(..., help="User name")) -> None:
    """List a user's tokens: id, prefix, last use, expiry and revocation."""
    table = Table("id", "prefix", "description", "created", "last used", "expires", "revoked")
    for t in request("GET", f"/api/v1/users/{name}/tokens"):
        revoked = f"{t['revoked_at']} by {t['revoked_by']}" if t["revoked_at"] else ""
        table.add_row(str(t["id"]), t["prefix"], t["description"], t["created_at"], t["last_used_at"] or "-",
                      t["expires_at"] or "-", revoked)
    console.print(table)


@user_app.command("revoke-token")
def user_revoke_token(
    name: str = typer.Argument(..., help="User name"),
    token: str = typer.Argument(..., help="Token id or prefix, as `user tokens` lists them"),
) -> None:
    """Revoke a token: it stops working at once for the API, git, the registry and dashboard sessions."""
    request("DELETE", f"/api/v1/users/{name}/tokens/{token}")
    say(f"revoked {token} of {name}")

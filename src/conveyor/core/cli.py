"""Core commands: users and tokens."""

from __future__ import annotations

import typer
from rich.table import Table

from conveyor.cli.client import console, request, say

user_app = typer.Typer(help="Users, roles and API tokens.", no_args_is_help=True)


@user_app.command("create")
def user_create(
    name: str,
    role: str = typer.Option(..., "--role", help="developer | reviewer | cluster-admin | admin"),
) -> None:
    """Create a user and print its API token."""
    out = request("POST", "/api/v1/users", json_body={"name": name, "role": role})
    say(out["token"])


@user_app.command("list")
def user_list() -> None:
    table = Table("name", "role", "created")
    for u in request("GET", "/api/v1/users"):
        table.add_row(u["name"], u["role"], u["created_at"])
    console.print(table)


@user_app.command("token")
def user_token(name: str) -> None:
    """Issue a new API token for a user."""
    say(request("POST", f"/api/v1/users/{name}/tokens")["token"])

"""``conveyor settings ...``: server-wide settings (admin only)."""

from __future__ import annotations

import typer

from conveyor.core.client import request, say

settings_app = typer.Typer(help="Server-wide settings (admin only).", no_args_is_help=True)
outbound_app = typer.Typer(help="Which loopback/private hosts the server may fetch from (webhooks, upstreams).",
                           no_args_is_help=True)
settings_app.add_typer(outbound_app, name="outbound")


def _current() -> list[str]:
    return list(request("GET", "/api/v1/settings/outbound")["allow"])


def _put(allow: list[str]) -> None:
    out = request("PUT", "/api/v1/settings/outbound", json_body={"allow": allow})
    say("allowed: " + (", ".join(out["allow"]) or "(nothing: only public addresses are fetched)"))


@outbound_app.command("show")
def outbound_show() -> None:
    """Print the allow-list."""
    say("\n".join(_current()) or "(empty: only public addresses are fetched)")


@outbound_app.command("allow")
def outbound_allow(hosts: list[str] = typer.Argument(..., help="host names, IP addresses or CIDR networks")) -> None:
    """Allow hosts although they resolve to loopback, private or link-local addresses."""
    current = _current()
    _put(current + [h for h in hosts if h.lower() not in current])


@outbound_app.command("remove")
def outbound_remove(hosts: list[str] = typer.Argument(..., help="Hosts on the allow-list")) -> None:
    """Take hosts off the allow-list."""
    drop = {h.lower() for h in hosts}
    _put([h for h in _current() if h not in drop])

"""How CLI commands reach a running server: URL and token resolution, readable problem details."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.text import Text

from conveyor.core.config import default_data_dir, environment

err_console = Console(stderr=True)
console = Console()


@dataclass
class Target:
    server: str | None
    token: str | None
    data_dir: Path


_target = Target(server=None, token=None, data_dir=Path("~/.local/share/conveyor").expanduser())


def configure(server: str | None, token: str | None, data_dir: Path | None) -> None:
    """The command line's --server, --token and --data-dir, else CONVEYOR_SERVER, _TOKEN, _DATA_DIR."""
    try:
        env = environment()
    except ValueError as exc:
        fail(str(exc))
    _target.server = server or env.server
    _target.token = token or env.token
    _target.data_dir = data_dir.expanduser() if data_dir is not None else default_data_dir()


def server_url() -> str:
    if _target.server:
        return _target.server.rstrip("/")
    info = _target.data_dir / "server.json"
    if info.exists():
        return str(json.loads(info.read_text())["url"]).rstrip("/")
    return "http://127.0.0.1:8080"


def token() -> str | None:
    if _target.token:
        return _target.token
    path = _target.data_dir / "admin.token"
    if path.exists():
        return path.read_text().strip()
    return None


def say(message: object) -> None:
    """Print data as it is: no Rich markup (titles may contain brackets), no wrapping."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    text = Text("error: ", style="bold red")
    text.append(message)
    err_console.print(text, soft_wrap=True)
    raise typer.Exit(code)


def _client() -> httpx.Client:
    headers = {"Accept": "application/json"}
    t = token()
    if t:
        headers["Authorization"] = f"Bearer {t}"
    return httpx.Client(base_url=server_url(), headers=headers, timeout=120)


def request(method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None) -> Any:
    try:
        with _client() as c:
            resp = c.request(method, path, json=json_body, params=params)
    except httpx.ConnectError:
        fail(f"cannot reach the Conveyor server at {server_url()} (is `conveyor up` running?)")
    if resp.status_code >= 400:
        try:
            problem = resp.json()
            msg = problem.get("detail") or problem.get("title") or resp.text
            rule = problem.get("rule")
            blockers = problem.get("blockers")
            if blockers:
                msg = problem.get("title", "refused") + ":\n" + "\n".join(
                    f"  - {b['message']} [{b['rule']}]" for b in blockers
                )
            elif rule:
                msg = f"{msg} [{rule}]"
        except ValueError:
            msg = resp.text or resp.reason_phrase
        fail(f"{resp.status_code}: {msg}")
    if resp.status_code == 204 or not resp.content:
        return None
    if resp.headers.get("content-type", "").startswith("application/json"):
        return resp.json()
    return resp.text

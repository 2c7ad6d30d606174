"""Entry point of the `conveyor` command."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console

from conveyor.agent.cli import agent_app
from conveyor.cli import help as _help  # noqa: F401 - flags show no <bool> type
from conveyor.clusters.agent_cli import install as agent_install
from conveyor.clusters.cli import cluster_app
from conveyor.core import client
from conveyor.core.cli import user_app
from conveyor.core.settings_cli import settings_app
from conveyor.delivery.cli import app_app, env_app, freeze_app, gitops_app, promote, promotion_app, rollback
from conveyor.demo.cli import demo
from conveyor.forge.cli import hook_app, pr_app, repo_app, status_app
from conveyor.pipelines.cli import image_app, run_app, runner_app, secret_app
from conveyor.registry.cli import registry_app

app = typer.Typer(help="Conveyor: self-hosted GitOps CI/CD.", no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(user_app, name="user")
app.add_typer(settings_app, name="settings")
app.add_typer(repo_app, name="repo")
app.add_typer(pr_app, name="pr")
app.add_typer(hook_app, name="hook")
app.add_typer(status_app, name="status")
app.add_typer(cluster_app, name="cluster")
app.add_typer(registry_app, name="registry")
app.add_typer(gitops_app, name="gitops")
app.add_typer(app_app, name="app")
app.add_typer(env_app, name="env")
app.add_typer(promotion_app, name="promotion")
app.command("promote")(promote)
app.command("rollback")(rollback)
app.add_typer(freeze_app, name="freeze")
app.command("demo")(demo)
app.add_typer(run_app, name="run")
app.add_typer(secret_app, name="secret")
app.add_typer(image_app, name="image")
app.add_typer(runner_app, name="runner")
agent_app.command("install")(agent_install)  # needs the server and the data dir: not the agent's own code
app.add_typer(agent_app, name="agent")


@app.callback()
def main(
    server: str = typer.Option(None, "--server", help="Server URL (or CONVEYOR_SERVER)"),
    token: str = typer.Option(None, "--token", help="API token (or CONVEYOR_TOKEN)"),
    data_dir: Path = typer.Option(None, "--data-dir", help="Local data dir (or CONVEYOR_DATA_DIR)"),
) -> None:
    client.configure(server, token, data_dir)


@app.command()
def up(
    data_dir: Path = typer.Option(None, "--data-dir", help="Where state lives (default ~/.local/share/conveyor)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on"),
    port: int = typer.Option(8080, "--port", help="Port of the API, git, registry and dashboard"),
    database_url: str = typer.Option(None, "--database-url", help="Or CONVEYOR_DATABASE_URL; default SQLite"),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error"),
    runners: int = typer.Option(None, "--runners", help="Runs the server's own runner executes at once (0: none; "
                                "default 2 or CONVEYOR_PIPELINE_WORKERS)"),
    rotate_admin_token: bool = typer.Option(False, "--rotate-admin-token",
                                            help="Write a new admin.token and revoke the old one"),
) -> None:
    """Run the Conveyor server: API, git, registry and UI on one port."""
    import uvicorn

    from conveyor.core import Database, Settings
    from conveyor.core.bootstrap import bootstrap, write_secret
    from conveyor.server import create_app

    settings = Settings.from_env(
        data_dir=data_dir or client._target.data_dir, host=host, port=port, database_url=database_url
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    console = Console(stderr=True)
    db = Database(settings.db_url)
    try:
        created = bootstrap(settings, db, rotate_admin_token=rotate_admin_token)
    except Exception as exc:  # the DB may be unreachable or the dir unwritable
        client.fail(f"cannot prepare {settings.data_dir}: {exc}")
    if created:
        console.print(f"admin token written to [bold]{created}[/] (mode 0600)")
    write_secret(settings.data_dir / "server.json", json.dumps({"url": settings.base_url}))
    console.print(f"Conveyor {settings.base_url}  data: {settings.data_dir}  db: {db.engine.dialect.name}")
    if runners is not None:
        import os

        os.environ["CONVEYOR_PIPELINE_WORKERS"] = str(runners)
    # Idle keep-alive connections stay open 75 s (nginx's default), not uvicorn's 5 s: a pooled client
    # (a runner, skopeo, a test's httpx client) that sends on a connection the server is closing that
    # very moment gets "Server disconnected without sending a response". httpx's pool also drops idle
    # connections after 5 s, so with both at 5 s a pause of about 5 s (a CLI call under load) hit it.
    uvicorn.run(create_app(settings, db), host=host, port=port, log_level=log_level, access_log=False,
                timeout_keep_alive=75)

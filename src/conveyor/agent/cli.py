"""`conveyor agent run` and `conveyor agent status`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import typer

from conveyor.agent import config as agent_config

agent_app = typer.Typer(help="The cluster agent: keep a cluster equal to its GitOps branches.", no_args_is_help=True)


def _load(path: Path) -> agent_config.AgentConfig:
    try:
        return agent_config.load(path)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {path}: {exc}", err=True)
        raise typer.Exit(2) from exc


@agent_app.command("run")
def run(
    config: Path = typer.Option(..., "--config", "-c", help="agent.yaml"),
    once: bool = typer.Option(False, "--once", help="Reconcile every sync once and exit (1 if any is not Ready)"),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error"),
) -> None:
    """Run the agent (in the foreground)."""
    from conveyor.agent.runner import Agent

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    agent = Agent(_load(config))
    if once:
        ok = agent.once()
        for row in agent.board.snapshot()["syncs"]:
            typer.echo(f"{row['name']}\t{row['state']}\t{row['reason']}\t{row['message']}")
        agent.close()
        raise typer.Exit(0 if ok else 1)
    agent.run()


key_app = typer.Typer(help="The cluster's age key for application secrets (the private key stays in the cluster).",
                      no_args_is_help=True)
agent_app.add_typer(key_app, name="key")


@key_app.command("install")
def key_install(config: Path = typer.Option(..., "--config", "-c", help="agent.yaml")) -> None:
    """Create the cluster's age key unless it has one; prints its public key (for the server)."""
    from conveyor.agent.agekey import install_with

    cfg = _load(config)
    typer.echo(install_with(cfg.cluster.kubeconfig, cfg.cluster.context, cfg.inventory_namespace))


@key_app.command("rotate")
def key_rotate(config: Path = typer.Option(..., "--config", "-c", help="agent.yaml")) -> None:
    """Make a new newest age key (the previous one still decrypts); prints the new public key."""
    from conveyor.agent.agekey import rotate_with

    cfg = _load(config)
    typer.echo(rotate_with(cfg.cluster.kubeconfig, cfg.cluster.context, cfg.inventory_namespace))


def _ago(ts: float | None) -> str:
    return "-" if ts is None else f"{int(time.time() - ts)}s ago"


@agent_app.command("status")
def status(
    config: Path = typer.Option(..., "--config", "-c", help="agent.yaml"),
    as_json: bool = typer.Option(False, "--json", help="Print the status document as JSON"),
) -> None:
    """Status of every sync, from the running agent (or its last saved state when it is not running)."""
    cfg = _load(config)
    host, port = cfg.host_port
    try:
        doc = httpx.get(f"http://{host}:{port}/status", timeout=5).json()
        source = "agent"
    except (httpx.HTTPError, ValueError):
        path = cfg.state_dir / "status.json"
        if not path.exists():
            typer.echo("error: the agent is not running and has no saved status", err=True)
            raise typer.Exit(1) from None
        doc = json.loads(path.read_text())
        source = f"saved state {path}"
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"# cluster {cfg.cluster.name}, from {source}")
    typer.echo("SYNC\tSTATE\tREASON\tAPPLIED\tATTEMPTED\tLAST RECONCILE\tMESSAGE")
    for row in doc["syncs"]:
        typer.echo("\t".join([
            row["name"], row["state"], row["reason"], (row["last_applied_revision"] or "-")[:12],
            (row["last_attempted_revision"] or "-")[:12], _ago(row["last_reconcile_at"]), row["message"],
        ]))

"""`conveyor cluster ...`: local clusters are managed directly on the data dir, no server needed."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import typer
from rich.table import Table

from conveyor.cli import client
from conveyor.cli.client import console, err_console, fail
from conveyor.clusters import external, local
from conveyor.clusters import spec as specs
from conveyor.clusters.layout import Layout
from conveyor.core.errors import ConveyorError

cluster_app = typer.Typer(help="Kubernetes clusters: local throwaway ones, or existing ones.", no_args_is_help=True)


def _data_dir() -> Path:
    return client._target.data_dir.expanduser().resolve()


def _progress(line: str) -> None:
    err_console.print(line, markup=False, highlight=False)


def default_registry(data_dir: Path) -> str | None:
    """host:port of this installation's registry (the Conveyor server), from server.json."""
    info = data_dir / "server.json"
    try:
        url = json.loads(info.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    return f"{parts.hostname}:{parts.port or 80}"


@cluster_app.command("create")
def create(
    name: str,
    api_port: int = typer.Option(None, "--api-port", help="API server port (default: a free one)"),
    registry: list[str] = typer.Option(
        [], "--registry", help="plain-HTTP registry host:port the node may pull from (default: this Conveyor)"
    ),
    host_port: list[int] = typer.Option(
        [], "--host-port", help="another host loopback port that pods reach at the host gateway"
    ),
) -> None:
    """Create a local cluster (or resume a half-created one, or restart a stopped one)."""
    data_dir = _data_dir()
    registries = list(registry)
    if not registries and (default := default_registry(data_dir)):
        registries.append(default)
    try:
        spec = local.create(
            data_dir, name, api_port=api_port, registries=registries, host_ports=list(host_port), progress=_progress
        )
    except ConveyorError as exc:
        fail(exc.detail)
    console.print(f"cluster {spec.name} ready: {spec.api_url}", highlight=False)
    console.print(f"kubeconfig: {Layout(data_dir, spec).kubeconfig}", highlight=False)
    ports = ", ".join(str(p) for p in spec.forwarded_ports)
    console.print(f"pods reach the host at {spec.host_gateway} (host.conveyor.internal), ports {ports}",
                  highlight=False)


@cluster_app.command("add")
def add(
    name: str,
    kubeconfig: Path = typer.Option(..., "--kubeconfig", help="kubeconfig of an existing cluster"),
    context: str = typer.Option(None, "--context", help="context to use (default: its current-context)"),
) -> None:
    """Register an existing cluster by kubeconfig."""
    try:
        spec = external.add(_data_dir(), name, kubeconfig, context)
    except ConveyorError as exc:
        fail(exc.detail)
    console.print(f"registered {spec.name} (context {spec.context})", highlight=False)


@cluster_app.command("list")
def list_clusters(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Clusters of this installation: name, API URL, state, node readiness, Kubernetes version."""
    rows = local.list_status(_data_dir())
    if as_json:
        console.print_json(json.dumps([r.__dict__ for r in rows]))
        return
    table = Table("name", "API URL", "state", "nodes", "version", "kind")
    for r in rows:
        table.add_row(r.name, r.api_url, r.state, r.nodes, r.version, r.kind)
    console.print(table)


@cluster_app.command("delete")
def delete(
    name: str,
    force: bool = typer.Option(False, "--force", help="delete even if workloads are running"),
) -> None:
    """Delete a cluster: every process and file of a local one; a registered one is only forgotten."""
    try:
        local.delete(_data_dir(), name, force=force, progress=_progress)
    except ConveyorError as exc:
        fail(exc.detail)
    console.print(f"deleted {name}", highlight=False)


@cluster_app.command("kubeconfig")
def kubeconfig(name: str) -> None:
    """Print the path of the cluster's kubeconfig."""
    data_dir = _data_dir()
    try:
        spec = specs.load(data_dir, name)
    except ConveyorError as exc:
        fail(exc.detail)
    console.print(str(Layout(data_dir, spec).kubeconfig), highlight=False, soft_wrap=True)

"""`conveyor cluster ...`: local clusters are managed directly on the data dir, no server needed."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import typer
from rich.table import Table

from conveyor.clusters import external, local
from conveyor.clusters import spec as specs
from conveyor.clusters.layout import Layout
from conveyor.core import client
from conveyor.core.client import console, err_console, fail
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


AGENT_HELP = "Also register it with the server, with this agent: conveyor | flux"
MANIFESTS_HELP = "Where a Flux cluster's manifests go (mode 0600; default ./flux-NAME.yaml)"


@cluster_app.command("create")
def create(
    name: str = typer.Argument(..., help="The new local cluster's name"),
    api_port: int = typer.Option(None, "--api-port", help="API server port (default: a free one)"),
    registry: list[str] = typer.Option(
        [], "--registry", help="plain-HTTP registry host:port the node may pull from (default: this Conveyor)"
    ),
    agent: str = typer.Option(None, "--agent", help=AGENT_HELP),
    token_file: Path = typer.Option(None, "--token-file", help="Write the agent token here (mode 0600)"),
    manifests: Path = typer.Option(None, "--manifests", help=MANIFESTS_HELP),
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
    if agent is not None:
        _register(name, agent, spec.version, token_file, manifests, _install_key(data_dir, name, agent))
    ports = ", ".join(str(p) for p in spec.forwarded_ports)
    console.print(f"pods reach the host at {spec.host_gateway} (host.conveyor.internal), ports {ports}",
                  highlight=False)


@cluster_app.command("add")
def add(
    name: str = typer.Argument(..., help="The name environments will use for it"),
    kubeconfig: Path = typer.Option(..., "--kubeconfig", help="kubeconfig of an existing cluster"),
    context: str = typer.Option(None, "--context", help="context to use (default: its current-context)"),
    agent: str = typer.Option(None, "--agent", help=AGENT_HELP),
    token_file: Path = typer.Option(None, "--token-file", help="Write the agent token here (mode 0600)"),
    manifests: Path = typer.Option(None, "--manifests", help=MANIFESTS_HELP),
) -> None:
    """Add an existing cluster by kubeconfig (and, with --agent, register it with the server)."""
    try:
        spec = external.add(_data_dir(), name, kubeconfig, context)
    except ConveyorError as exc:
        fail(exc.detail)
    console.print(f"registered {spec.name} (context {spec.context})", highlight=False)
    if agent is not None:
        _register(name, agent, "", token_file, manifests, _install_key(_data_dir(), name, agent))


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
    name: str = typer.Argument(..., help="The cluster"),
    force: bool = typer.Option(False, "--force", help="delete even if workloads are running"),
) -> None:
    """Delete a cluster: every process and file of a local one; a registered one is only forgotten."""
    try:
        local.delete(_data_dir(), name, force=force, progress=_progress)
    except ConveyorError as exc:
        fail(exc.detail)
    console.print(f"deleted {name}", highlight=False)


@cluster_app.command("kubeconfig")
def kubeconfig(name: str = typer.Argument(..., help="The cluster")) -> None:
    """Print the path of the cluster's kubeconfig."""
    data_dir = _data_dir()
    try:
        spec = specs.load(data_dir, name)
    except ConveyorError as exc:
        fail(exc.detail)
    console.print(str(Layout(data_dir, spec).kubeconfig), highlight=False, soft_wrap=True)


@cluster_app.command("register")
def register(
    name: str = typer.Argument(..., help="Cluster name, as environments name it"),
    agent: str = typer.Option("conveyor", "--agent", help="The cluster's agent: conveyor | flux"),
    kubernetes_version: str = typer.Option(None, "--kubernetes-version",
                                           help="Default: the local cluster's version, if it is local"),
    token_file: Path = typer.Option(None, "--token-file", help="Write the agent token here (mode 0600)"),
    manifests: Path = typer.Option(None, "--manifests", help=MANIFESTS_HELP),
    age_recipient: str = typer.Option(None, "--age-recipient",
                                      help="The cluster's public age key (default: install one in a cluster of "
                                           "this data dir, `conveyor agent key install` elsewhere)"),
) -> None:
    """Register a cluster with the server and create its agent identity (prints the agent token once;
    for Flux also its events URL, HMAC key and manifests)."""
    version = kubernetes_version
    if version is None:
        try:
            version = specs.load(_data_dir(), name).version
        except ConveyorError:
            version = ""
    recipient = age_recipient or _install_key(_data_dir(), name, agent)
    _register(name, agent, version or "", token_file, manifests, recipient)


def _install_key(data_dir: Path, name: str, agent: str, rotate: bool = False) -> str | None:
    """Install the cluster's age key in the cluster itself (a Secret in the agent's namespace) and
    return its public half, for a Conveyor-agent cluster this data dir can reach; None otherwise."""
    if agent != "conveyor":
        return None
    try:
        spec = specs.load(data_dir, name)
    except ConveyorError:
        return None
    from conveyor.agent import agekey

    kubeconfig = Layout(data_dir, spec).kubeconfig
    if rotate:
        return agekey.rotate_with(kubeconfig, spec.context)
    return agekey.install_with(kubeconfig, spec.context)


@cluster_app.command("age-key")
def age_key(
    name: str = typer.Argument(..., help="Registered cluster"),
    recipient: str = typer.Option(None, "--recipient", help="A public key installed elsewhere "
                                  "(`conveyor agent key install|rotate` prints it)"),
    rotate: bool = typer.Option(False, "--rotate", help="Make a new key in the cluster (the old one still decrypts)"),
) -> None:
    """Install (or rotate) the cluster's age key in the cluster and tell the server its public half."""
    value = recipient or _install_key(_data_dir(), name, "conveyor", rotate=rotate)
    if not value:
        fail(f"cluster {name} is not in this data dir; pass --recipient from `conveyor agent key install`")
    out = client.request("PUT", f"/api/v1/clusters/{name}/age-recipient", json_body={"age_recipient": value})
    client.say(out["age_recipient"])


def _register(name: str, agent: str, version: str, token_file: Path | None, manifests: Path | None,
              age_recipient: str | None = None) -> None:
    out = client.request("POST", "/api/v1/clusters",
                         json_body={"name": name, "agent": agent, "kubernetes_version": version,
                                    "age_recipient": age_recipient})
    _emit_token(out["agent_token"], token_file, f"cluster {name} registered; agent identity {out['agent_user']}")
    if out.get("flux"):
        _emit_flux(name, out["flux"], manifests)


def _emit_flux(name: str, flux: dict[str, object], manifests: Path | None) -> None:
    """Where Flux sends events and with which key, and the manifests to apply (written, never printed:
    they hold the read-only git token and the key)."""
    from conveyor.core.bootstrap import write_secret

    path = manifests or Path(f"flux-{name}.yaml")
    write_secret(path, str(flux["manifests"]).rstrip("\n"))
    say = client.say
    say(f"events URL: {flux['events_url']}")
    say(f"HMAC key: {flux['hmac_key']}")
    say("  (the generic-hmac Provider's secret, shown once; `conveyor cluster flux-key` rotates it)")
    if flux.get("events_addr"):
        say(f"controllers' --events-addr: {flux['events_addr']}")
    say(f"manifests: {path} (apply with kubectl; re-issue with `conveyor cluster flux-manifests {name}`)")
    hooks = flux.get("webhooks") or []
    assert isinstance(hooks, list)
    for h in hooks:
        say(f"push webhook for {h['env']}: conveyor hook add {h['repo']} https://<notification-controller "
            f"receiver>{h['path']} --secret {h['secret']} --events push")


@cluster_app.command("flux-manifests")
def flux_manifests(
    name: str = typer.Argument(..., help="Registered Flux cluster"),
    manifests: Path = typer.Option(None, "--manifests", help=MANIFESTS_HELP),
) -> None:
    """Write the Flux manifests for every environment on the cluster (a new read-only git token)."""
    out = client.request("POST", f"/api/v1/clusters/{name}/flux/manifests")
    _emit_flux(name, out, manifests)


@cluster_app.command("flux-key")
def flux_key(name: str = typer.Argument(..., help="Registered Flux cluster")) -> None:
    """Rotate the HMAC key Flux signs events with; put the new one in the Provider's secret."""
    out = client.request("POST", f"/api/v1/clusters/{name}/flux/key")
    client.say(out["hmac_key"])


@cluster_app.command("flux-reports")
def flux_reports(name: str = typer.Argument(..., help="Registered Flux cluster"),
                 as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """What Flux last reported for each of its objects, and what Conveyor made of it."""
    rows = client.request("GET", f"/api/v1/clusters/{name}/flux/reports")
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("object", "severity", "reason", "revision", "message", "Conveyor")
    for r in rows:
        table.add_row(f"{r['kind']}/{r['namespace']}/{r['name']}", r["severity"], r["reason"], r["revision"],
                      r["message"][:120], r["outcome"])
    console.print(table)


@cluster_app.command("agent-token")
def agent_token(
    name: str = typer.Argument(..., help="Registered cluster"),
    token_file: Path = typer.Option(None, "--token-file", help="Write the agent token here (mode 0600)"),
) -> None:
    """Issue a new token for the cluster's agent; every earlier one stops working at once."""
    out = client.request("POST", f"/api/v1/clusters/{name}/agent-token")
    _emit_token(out["agent_token"], token_file, f"new agent token for {name}")


@cluster_app.command("unregister")
def unregister(name: str = typer.Argument(..., help="Registered cluster")) -> None:
    """Remove a cluster's registration; its agent identity is disabled and its tokens revoked."""
    client.request("DELETE", f"/api/v1/clusters/{name}")
    console.print(f"cluster {name} unregistered", highlight=False)


def _emit_token(token: str, token_file: Path | None, message: str) -> None:
    if token_file is None:
        err_console.print(message, markup=False, highlight=False)
        client.say(token)
        return
    from conveyor.core.bootstrap import write_secret

    write_secret(token_file, token)
    console.print(f"{message}; token written to {token_file}", markup=False, highlight=False)

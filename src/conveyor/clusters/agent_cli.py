"""`conveyor agent install CLUSTER`: build the agent image, push it to Conveyor's registry and run the
agent inside a local cluster of this data dir (``agent_install.py`` says what it applies and why).

It lives with clusters rather than in ``conveyor.agent.cli`` because it talks to the server (the agent
token) and to the data dir (the cluster's address, its admin credentials): the agent itself imports no
server code. The CLI's composition root adds it to the ``agent`` command group.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlsplit

import typer

from conveyor.agent import parse_duration
from conveyor.clusters import agent_install, local
from conveyor.clusters import spec as specs
from conveyor.clusters.cli import _data_dir, _progress
from conveyor.clusters.kubeapi import KubeClient
from conveyor.clusters.spec import ClusterSpec
from conveyor.core import agent_name, client
from conveyor.core.client import console, fail
from conveyor.core.errors import ConveyorError

HOST_NAME = "host.conveyor.internal"  # CoreDNS answers it with the cluster's host gateway


def _server_port(spec: ClusterSpec) -> int:
    """The loopback port of this Conveyor, which the cluster must forward (its registry, git and API)."""
    parts = urlsplit(client.server_url())
    if parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
        fail(f"the server {client.server_url()} is not on this machine's loopback; pass --forge-url")
    if parts.port not in spec.forwarded_ports:
        fail(f"cluster {spec.name} does not forward port {parts.port} (its registries: "
             f"{', '.join(spec.registries) or 'none'}); create it with --registry 127.0.0.1:{parts.port}")
    return parts.port


def _push_image(registry: str) -> str:
    """The agent image (built or cached) in Conveyor's registry, as an exact reference by digest."""
    from conveyor.images import conveyor_image, push_archive

    started = time.monotonic()
    archive = conveyor_image("agent", log=_progress)
    tag = "conveyor/agent:" + archive.name.removesuffix(".oci.tar").rsplit("-", 1)[-1]
    token = client.token()
    if not token:
        fail("pushing the agent image needs an API token (--token, CONVEYOR_TOKEN or the data dir's admin.token)")
    user = client.request("GET", "/api/v1/user")["name"]
    digest = push_archive(archive, registry, tag, user, token, log=_progress)
    _progress(f"agent image {tag} in the registry ({time.monotonic() - started:.1f}s)")
    return f"{registry}/{tag.split(':', 1)[0]}@{digest}"


def _wait_ready(kube: KubeClient, timeout: float) -> float:
    """Seconds until the agent's Deployment has its one replica ready (it answers /status)."""
    started = time.monotonic()
    path = f"/apis/apps/v1/namespaces/{agent_install.NAMESPACE}/deployments/{agent_install.NAME}"
    while time.monotonic() - started < timeout:
        dep = kube.get(path)
        status = dep.get("status", {})
        if status.get("observedGeneration", 0) >= dep["metadata"]["generation"] \
                and status.get("readyReplicas", 0) == 1 and status.get("updatedReplicas", 0) == 1:
            return time.monotonic() - started
        time.sleep(1)
    fail(f"the agent did not become ready within {timeout:.0f}s; see `kubectl -n {agent_install.NAMESPACE} "
         f"describe pod -l app={agent_install.NAME}`")


def _node_port(kube: KubeClient) -> int:
    service = kube.get(f"/api/v1/namespaces/{agent_install.NAMESPACE}/services/{agent_install.NAME}")
    return int(service["spec"]["ports"][0]["nodePort"])


def _add_webhooks(syncs: tuple[agent_install.Sync, ...], base: str, secret: str) -> None:
    """A push webhook per sync on its GitOps repository, to ``base/hooks/SYNC``; one this command added
    before (the same URL, an older secret) is replaced, so installing again leaves one hook per sync."""
    for sync in syncs:
        repo, url = agent_install.repo_of(sync), f"{base}/hooks/{sync.name}"
        for hook in client.request("GET", f"/api/v1/repos/{repo}/hooks"):
            if hook["url"] == url:
                client.request("DELETE", f"/api/v1/repos/{repo}/hooks/{hook['id']}")
        client.request("POST", f"/api/v1/repos/{repo}/hooks", json_body={"url": url, "secret": secret,
                                                                          "events": ["push"]})
        console.print(f"push webhook of {repo} -> {url}", highlight=False)


def _syncs(name: str, given: list[str], pod_forge: str, interval: str) -> tuple[agent_install.Sync, ...]:
    if not given:
        envs = client.request("GET", f"/api/v1/clusters/{name}/environments")
        if not envs:
            fail(f"no environment runs on cluster {name} (see `conveyor gitops init`); name branches with --sync")
        return agent_install.environment_syncs(envs, pod_forge, interval)
    try:
        return tuple(agent_install.parse_sync(s, pod_forge, interval) for s in given)
    except ValueError as exc:
        fail(str(exc))


def install(
    name: str = typer.Argument(..., help="A local cluster of this data dir, registered with the server"),
    sync: list[str] = typer.Option([], "--sync", help="NAME=REPO@BRANCH[:PATH], a GitOps branch to keep applied "
                                   "(repeatable), e.g. dev=platform/gitops@env/dev:rendered; default: every "
                                   "environment on the cluster"),
    forge_url: str = typer.Option(None, "--forge-url", help="The server as pods reach it "
                                  f"(default http://{HOST_NAME}:PORT)"),
    interval: str = typer.Option("1m", "--interval", help="How often each sync polls its branch (e.g. 30s, 1m)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the agent is ready"),
    timeout: float = typer.Option(300, "--timeout", help="Seconds to wait for it"),
    sync_timeout: str = typer.Option("5m", "--sync-timeout", help="How long each revision may take to become "
                                     "healthy before the agent reports it failed (e.g. 3m)"),
    webhooks: bool = typer.Option(False, "--webhooks", help="Expose the agent's webhook Service on the node "
                                  "(NodePort) and add a push webhook to each sync's repository, so a push is "
                                  "applied at once instead of at the next poll (the node's address must be on "
                                  "the outbound allow-list: `conveyor settings outbound`)"),
) -> None:
    """Run the Conveyor agent inside the cluster: its image, namespace, RBAC, token, config and Deployment.
    Issues a new agent token (earlier ones stop working), so an agent on the host should be stopped."""
    data_dir = _data_dir()
    try:
        spec = specs.load(data_dir, name)
    except ConveyorError as exc:
        fail(exc.detail)
    for option, value in (("--interval", interval), ("--sync-timeout", sync_timeout)):
        try:
            parse_duration(value)
        except ValueError as exc:
            fail(f"{option}: {exc}")
    port = _server_port(spec)
    pod_forge = forge_url or f"http://{HOST_NAME}:{port}"
    syncs = _syncs(name, sync, pod_forge, interval)
    registry = f"127.0.0.1:{port}"
    image = _push_image(registry)
    token = client.request("POST", f"/api/v1/clusters/{name}/agent-token")["agent_token"]
    inst = agent_install.Install(cluster=name, image=image, forge_url=pod_forge, token=token,
                                 agent_user=agent_name(name), registry=registry, syncs=syncs,
                                 webhook_secret=secrets.token_urlsafe(32) if webhooks else None,
                                 sync_timeout=sync_timeout)
    with local.admin_client(data_dir, spec, timeout=30) as kube:
        for obj in agent_install.manifests(inst):
            kube.apply(obj, field_manager="conveyor-install")
        console.print(f"agent installed in {name} ({agent_install.NAMESPACE}/{agent_install.NAME}, {image})",
                      highlight=False)
        if wait:
            console.print(f"agent ready after {_wait_ready(kube, timeout):.1f}s", highlight=False)
        if inst.webhook_secret:
            base = f"http://{spec.node_ip}:{_node_port(kube)}"
            console.print(f"agent status at {base}/status", highlight=False)
    if inst.webhook_secret:
        _add_webhooks(syncs, base, inst.webhook_secret)

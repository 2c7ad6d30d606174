"""The Flux objects that point a cluster's Flux at Conveyor, for every environment synced to it.

Per environment: a GitRepository on ``env/<env>`` (basic auth with a read-only token of the
cluster's agent identity), a Kustomization of ``./rendered`` (prune, wait: ``Ready`` then means
every applied object passed its health check, which is what a ``success`` status claims), and a
``generic-hmac`` Receiver that Conveyor's push webhook wakes. Once per cluster: a ``generic-hmac``
Provider at the events URL and an Alert for those Kustomizations whose ``eventMetadata`` names the
cluster. The Kustomization's ``event.toolkit.fluxcd.io/`` annotations travel in every event (Flux
RFC 0008) and tell the events endpoint the GitOps repository and the sync name, so the status
context is ``conveyor/deploy/<cluster>/<env>``, as with Conveyor's own agent.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import yaml

from conveyor.clusters.flux.events import EVENT_GROUP

NAMESPACE = "flux-system"
GIT_SECRET, EVENTS_SECRET, RECEIVER_SECRET = "conveyor-git", "conveyor-events", "conveyor-receiver"
PROVIDER = "conveyor"


@dataclass(frozen=True)
class SyncTarget:
    """An environment whose branch a cluster runs."""

    repo: str
    env: str
    branch: str
    path: str = "./rendered"

    @property
    def object_name(self) -> str:
        return f"{self.repo}-{self.env}"[:63].rstrip("-")


@dataclass(frozen=True)
class FluxSetup:
    cluster: str
    base_url: str  # Conveyor's URL as the cluster reaches it
    agent_user: str
    git_token: str
    hmac_key: str

    @property
    def events_url(self) -> str:
        return f"{self.base_url}/api/v1/clusters/{self.cluster}/flux/events"

    @property
    def receiver_token(self) -> str:
        """Derived from the HMAC key, so regenerated manifests keep matching the push webhook."""
        return hmac.new(self.hmac_key.encode(), b"flux-receiver", hashlib.sha256).hexdigest()


def receiver_path(token: str, name: str, namespace: str = NAMESPACE) -> str:
    """notification-controller's webhook path of a Receiver: /hook/sha256(token+name+namespace)."""
    return "/hook/" + hashlib.sha256((token + name + namespace).encode()).hexdigest()


def events_addr(setup: FluxSetup, agent_token: str) -> str:
    """The controllers' ``--events-addr`` (their own posts are unsigned: they authenticate as the
    agent identity with basic auth in the URL, which Go's HTTP client sends)."""
    scheme, _, rest = setup.events_url.partition("://")
    return f"{scheme}://{setup.agent_user}:{agent_token}@{rest}"


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
            "type": "Opaque", "stringData": data}


def sync_objects(setup: FluxSetup, t: SyncTarget, interval: str = "1m") -> list[dict[str, Any]]:
    meta = {"name": t.object_name, "namespace": NAMESPACE}
    return [
        {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": dict(meta),
         "spec": {"interval": interval, "url": f"{setup.base_url}/git/{t.repo}.git", "ref": {"branch": t.branch},
                  "secretRef": {"name": GIT_SECRET}}},
        {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
         "metadata": {**meta, "annotations": {f"{EVENT_GROUP}/repo": t.repo, f"{EVENT_GROUP}/sync": t.env,
                                              f"{EVENT_GROUP}/cluster": setup.cluster}},
         "spec": {"interval": "5m", "retryInterval": "30s", "timeout": "3m", "path": t.path, "prune": True,
                  "wait": True, "sourceRef": {"kind": "GitRepository", "name": t.object_name}}},
        {"apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver", "metadata": dict(meta),
         "spec": {"type": "generic-hmac", "events": ["push"], "secretRef": {"name": RECEIVER_SECRET},
                  "resources": [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                                 "name": t.object_name}]}},
    ]


def objects(setup: FluxSetup, targets: list[SyncTarget]) -> list[dict[str, Any]]:
    out = [_secret(GIT_SECRET, {"username": setup.agent_user, "password": setup.git_token}),
           _secret(EVENTS_SECRET, {"token": setup.hmac_key}),
           _secret(RECEIVER_SECRET, {"token": setup.receiver_token})]
    for t in targets:
        out += sync_objects(setup, t)
    out.append({"apiVersion": "notification.toolkit.fluxcd.io/v1beta3", "kind": "Provider",
                "metadata": {"name": PROVIDER, "namespace": NAMESPACE},
                "spec": {"type": "generic-hmac", "address": setup.events_url, "secretRef": {"name": EVENTS_SECRET}}})
    out.append({"apiVersion": "notification.toolkit.fluxcd.io/v1beta3", "kind": "Alert",
                "metadata": {"name": PROVIDER, "namespace": NAMESPACE},
                "spec": {"providerRef": {"name": PROVIDER}, "eventSeverity": "info",
                         "eventSources": [{"kind": "Kustomization", "name": t.object_name} for t in targets]
                         or [{"kind": "Kustomization", "name": "*"}],
                         "eventMetadata": {"cluster": setup.cluster}}})
    return out


def render(setup: FluxSetup, targets: list[SyncTarget]) -> str:
    header = (f"# Flux objects for cluster {setup.cluster}: apply with `kubectl apply -f` (needs Flux's CRDs).\n"
              f"# Events go to {setup.events_url}\n")
    return header + yaml.safe_dump_all(objects(setup, targets), sort_keys=False)


def webhook_hints(setup: FluxSetup, targets: list[SyncTarget]) -> list[dict[str, str]]:
    """What to register as Conveyor push webhooks so each Receiver reconciles at once on a push."""
    return [{"repo": t.repo, "env": t.env, "receiver": t.object_name,
             "path": receiver_path(setup.receiver_token, t.object_name), "secret": setup.receiver_token}
            for t in targets]

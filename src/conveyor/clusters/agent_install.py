"""The Conveyor agent inside its cluster: the objects `conveyor agent install CLUSTER` applies.

What runs: the agent image (``conveyor.images``, variant ``agent``) as a one-replica Deployment in
``conveyor-system`` (``Recreate``: two agents would fight over the same objects), with

- a ServiceAccount bound to ``cluster-admin``. The agent applies and prunes whatever its GitOps
  branches hold: namespaces, CRDs, RBAC, any kind. A narrower role would have to list every kind a
  branch may ever contain, and an agent allowed to write RoleBindings can grant itself the rest
  anyway, so, like Flux's kustomize-controller, it gets the whole cluster; who may write to the
  branches is what limits it (branch protection on the GitOps repository);
- a Secret with the cluster's agent token (its own identity, narrowed to GitOps repositories and its
  cluster's deploy statuses) and an image pull secret made of the same token;
- a ConfigMap with agent.yaml: the syncs, and the forge at its address as pods see it
  (``http://host.conveyor.internal:PORT`` on a local cluster);
- a Service for push webhooks (port 9797) and readiness on ``/status``. With a webhook secret (``conveyor
  agent install --webhooks``) it is a NodePort Service, so the forge on the host reaches it on the node's
  address, and the secret is in the agent's Secret (``CONVEYOR_WEBHOOK_SECRET``) for every sync.

State lives in the cluster: the agent keeps each sync's inventory in a ConfigMap of ``conveyor-system``
and re-fetches its sources, so the pod's volumes are emptyDirs and a new pod picks up where the old one
stopped. The pod template carries a checksum of the config and token, so installing again (a new token,
other syncs) rolls the pod.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

NAMESPACE = "conveyor-system"
NAME = "conveyor-agent"
PORT = 9797
UID = 65532
_SECRET_DIR = "/etc/conveyor-agent/secret"


@dataclass(frozen=True)
class Sync:
    """One GitOps branch the agent keeps applied (``url`` as the pod reaches it)."""

    name: str
    url: str
    branch: str
    path: str = "."
    interval: str = "1m"
    create_namespaces: bool = False  # environments: a first Secret may come before the app's Namespace


@dataclass(frozen=True)
class Install:
    cluster: str
    image: str
    forge_url: str  # as pods reach it
    token: str
    agent_user: str
    registry: str  # the image's registry host, as the node pulls from it
    syncs: tuple[Sync, ...]
    webhook_secret: str | None = None  # set: push webhooks reach the agent through a NodePort
    sync_timeout: str = "5m"  # how long a revision may take to become healthy before it counts as failed


WEBHOOK_ENV = "CONVEYOR_WEBHOOK_SECRET"


def agent_config(inst: Install) -> dict[str, Any]:
    return {
        "cluster": {"name": inst.cluster},  # no kubeconfig: the pod's service account
        "forge": {"server": inst.forge_url, "token_file": f"{_SECRET_DIR}/token", "token_env": None},
        "listen": f"0.0.0.0:{PORT}",
        "public_url": f"http://{NAME}.{NAMESPACE}.svc:{PORT}/status",
        "state_dir": "/var/lib/conveyor-agent",
        "inventory_namespace": NAMESPACE,
        # Images name Conveyor's registry as the node pulls it (127.0.0.1:PORT); the pod reads their
        # signatures from the forge's address, so Conveyor-built apps/ images are still verified.
        "signatures": {"registries": [inst.registry], "endpoints": {inst.registry: _host_of(inst.forge_url)}},
        "syncs": [{"name": s.name, "url": s.url, "branch": s.branch, "path": s.path, "interval": s.interval,
                   "retry_interval": "5s", "prune": True, "wait": True, "timeout": inst.sync_timeout,
                   "create_namespaces": s.create_namespaces,
                   **({"webhook_secret_env": WEBHOOK_ENV} if inst.webhook_secret else {})} for s in inst.syncs],
    }


def _host_of(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _pull_secret(inst: Install) -> dict[str, Any]:
    auth = base64.b64encode(f"{inst.agent_user}:{inst.token}".encode()).decode()
    config = json.dumps({"auths": {inst.registry: {"auth": auth}}})
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": f"{NAME}-pull", "namespace": NAMESPACE},
            "stringData": {".dockerconfigjson": config}}


def _rbac() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": NAME},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
    ]


def _pod(inst: Install, checksum: str) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/status", "port": "http"}, "periodSeconds": 2}
    container = {
        "name": "agent", "image": inst.image, "imagePullPolicy": "IfNotPresent",
        "args": ["run", "--config", "/etc/conveyor-agent/agent.yaml"],
        "env": [{"name": "HOME", "value": "/var/lib/conveyor-agent"},
                *([{"name": WEBHOOK_ENV, "valueFrom": {"secretKeyRef": {"name": NAME, "key": "webhook-secret"}}}]
                  if inst.webhook_secret else [])],
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 30,
                          "failureThreshold": 4},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/conveyor-agent/agent.yaml", "subPath": "agent.yaml"},
            {"name": "secret", "mountPath": _SECRET_DIR, "readOnly": True},
            {"name": "state", "mountPath": "/var/lib/conveyor-agent"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "metadata": {"labels": {"app": NAME}, "annotations": {"conveyor.dev/config-checksum": checksum}},
        "spec": {
            "serviceAccountName": NAME,
            "imagePullSecrets": [{"name": f"{NAME}-pull"}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID},
            "terminationGracePeriodSeconds": 15,
            "containers": [container],
            "volumes": [
                {"name": "config", "configMap": {"name": NAME}},
                {"name": "secret", "secret": {"secretName": NAME}},
                {"name": "state", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def manifests(inst: Install) -> list[dict[str, Any]]:
    """Every object of the installation, in the order they are applied."""
    config = yaml.safe_dump(agent_config(inst), sort_keys=False)
    checksum = hashlib.sha256(f"{config}|{inst.token}|{inst.image}|{inst.webhook_secret}".encode()).hexdigest()[:16]
    labels = {"app": NAME}
    secret = {"token": inst.token, **({"webhook-secret": inst.webhook_secret} if inst.webhook_secret else {})}
    service_type = "NodePort" if inst.webhook_secret else "ClusterIP"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        *_rbac(),
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": NAME, "namespace": NAMESPACE},
         "stringData": secret},
        _pull_secret(inst),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, "namespace": NAMESPACE},
         "data": {"agent.yaml": config}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels},
                  "template": _pod(inst, checksum)}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
         "spec": {"type": service_type, "selector": labels,
                  "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]}},
    ]


def repo_of(sync: Sync) -> str:
    """The forge repository a sync's URL names (``.../git/REPO.git``)."""
    return sync.url.split("/git/", 1)[-1].removesuffix(".git")


def environment_syncs(envs: list[dict[str, str]], forge_url: str, interval: str = "1m") -> tuple[Sync, ...]:
    """One sync per environment the server says the cluster runs (``GET /api/v1/clusters/{name}/environments``),
    named after the environment, or ``REPO-ENV`` when two GitOps repositories name one alike."""
    names = [e["env"] for e in envs]
    out = []
    for e in envs:
        name = e["env"] if names.count(e["env"]) == 1 else f"{e['repo']}-{e['env']}".replace("/", "-")[:52]
        out.append(Sync(name=name, url=f"{forge_url.rstrip('/')}/git/{e['repo']}.git", branch=e["branch"],
                        path=e["path"], interval=interval, create_namespaces=True))
    return tuple(out)


def parse_sync(value: str, forge_url: str, interval: str = "1m") -> Sync:
    """``NAME=REPO@BRANCH[:PATH]`` (e.g. ``dev=platform/gitops@env/dev:rendered``), the repository on the forge."""
    name, eq, rest = value.partition("=")
    repo, at, branch_path = rest.partition("@")
    branch, _, path = branch_path.partition(":")
    if not (eq and at and name and repo and branch):
        raise ValueError(f"--sync {value!r}: expected NAME=REPO@BRANCH[:PATH]")
    return Sync(name=name, url=f"{forge_url.rstrip('/')}/git/{repo}.git", branch=branch, path=path or ".",
                interval=interval)

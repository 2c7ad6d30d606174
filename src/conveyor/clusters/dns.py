"""Cluster DNS: CoreDNS as the ``kube-dns`` Service in ``kube-system``, as kubeadm and kind deploy it.

The objects mirror upstream's CoreDNS add-on (ServiceAccount, ClusterRole ``system:coredns``, its
binding, the ``coredns`` ConfigMap and Deployment, the ``kube-dns`` Service at the tenth address of
the Service range, which the kubelet's ``clusterDNS`` names), with these differences:

* the image is the local one built by coredns.py and imported into the node, so
  ``imagePullPolicy: Never`` (there is no registry to pull it from);
* no ``forward`` plugin: the node's namespace has no route beyond the host (network.py), so names
  outside ``cluster.local`` fail fast instead of timing out against an unreachable upstream;
* ``hosts`` answers ``host.conveyor.internal`` with the host gateway, where pods reach Conveyor;
* it binds port 53 as a non-root user through the namespaced, "safe" sysctl
  ``net.ipv4.ip_unprivileged_port_start`` instead of a file capability on the binary;
* one replica, readiness polled every second: it is what "DNS Ready" waits for.

Applied with server-side apply on every start of the cluster, so a resumed create or a restart by
the supervisor puts back whatever was changed or deleted.
"""

from __future__ import annotations

from typing import Any

from conveyor.clusters.coredns import COREDNS_IMAGE
from conveyor.clusters.kubeapi import KubeClient
from conveyor.clusters.spec import ClusterSpec

NAMESPACE = "kube-system"
NAME = "coredns"
LABELS = {"k8s-app": "kube-dns"}
HOST_NAME = "host.conveyor.internal"


def corefile(spec: ClusterSpec) -> str:
    return f""".:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    hosts {{
        {spec.host_gateway} {HOST_NAME}
        fallthrough
    }}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus :9153
    cache 30
    loadbalance
    reload
}}
"""


def _meta(name: str, namespaced: bool = True, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    if labels:
        meta["labels"] = labels
    return meta


def _container() -> dict[str, Any]:
    return {
        "name": "coredns",
        "image": COREDNS_IMAGE,
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "initialDelaySeconds": 60,
                          "timeoutSeconds": 5, "failureThreshold": 5},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }


def manifests(spec: ClusterSpec) -> list[dict[str, Any]]:
    pod_spec = {
        "serviceAccountName": NAME,
        "priorityClassName": "system-cluster-critical",
        "dnsPolicy": "Default",
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}],
        },
        "containers": [_container()],
        "volumes": [{"name": "config-volume", "configMap": {"name": NAME, "items": [
            {"key": "Corefile", "path": "Corefile"}]}}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta("system:coredns", namespaced=False),
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": _meta("system:coredns", namespaced=False),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(NAME), "data": {"Corefile": corefile(spec)}},
        {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME, labels=LABELS),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": LABELS},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": LABELS}, "spec": pod_spec},
            },
        },
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": _meta("kube-dns", labels={**LABELS, "kubernetes.io/name": "CoreDNS"}),
            "spec": {
                "selector": LABELS,
                "clusterIP": spec.dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153, "protocol": "TCP"},
                ],
            },
        },
    ]


def apply(kube: KubeClient, spec: ClusterSpec) -> None:
    for obj in manifests(spec):
        kube.apply(obj)


def ready(kube: KubeClient) -> bool:
    """CoreDNS answers: its Deployment is Available, i.e. the pod passed /ready (which needs the
    kubernetes plugin's first sync with the API server, through the `kubernetes` Service)."""
    dep = kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}")
    status = dep.get("status") or {}
    conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
    observed = status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 1)
    return bool(observed and conds.get("Available") == "True" and status.get("availableReplicas", 0) >= 1)

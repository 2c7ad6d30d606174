"""Reaching an environment's cluster: a Kubernetes API client by cluster name, and the app's endpoint
(through the Service's NodePort on the node's address, as users reach it, or the API server's service
proxy)."""

from __future__ import annotations

from typing import Any

import httpx

from conveyor.clusters import ClusterSpec, KubeClient, admin_client, external, load
from conveyor.core import NotFound, Settings
from conveyor.delivery.environments import Via
from conveyor.delivery.ports import Probe

# hello waits 2s for its counter; a NodePort answer from a node on this host takes milliseconds.
ENDPOINT_TIMEOUT = 10.0


def client_for(settings: Settings, cluster: str, timeout: float = 10.0) -> KubeClient:
    try:
        spec = load(settings.data_dir, cluster)
    except NotFound:
        raise NotFound(f"unknown cluster '{cluster}' (see `conveyor cluster list`)", rule="env.cluster") from None
    if spec.kind == "external":  # clusters exports no client for registered clusters yet
        return external.client(settings.data_dir, spec, timeout=timeout)
    return admin_client(settings.data_dir, spec, timeout=timeout)


def probe_service(
    settings: Settings, cluster: str, namespace: str, service: str, port: int | str | None, path: str
) -> Probe:
    """GET ``path`` on a Service through the API server's service proxy (as `kubectl port-forward` users do).

    Without ``port``, the Service's first port is used (the proxy itself would only pick an unnamed one).
    """
    try:
        with client_for(settings, cluster) as kube:
            if port is None:
                r = kube.http.get(f"/api/v1/namespaces/{namespace}/services/{service}")
                if r.status_code != 200:
                    return Probe(True, r.status_code, r.text[:2000])
                first = (r.json().get("spec", {}).get("ports") or [{}])[0]
                port = first.get("name") or first.get("port")
            target = f"{service}:{port}" if port not in (None, "") else service
            r = kube.http.get(f"/api/v1/namespaces/{namespace}/services/{target}/proxy{path}")
    except (httpx.HTTPError, OSError) as exc:
        return Probe(False, None, "", f"{type(exc).__name__}: {exc}")
    return Probe(True, r.status_code, r.text[:2000], where=f"the service proxy of {namespace}/{target}")


def default_via(spec: ClusterSpec) -> Via:
    """Local clusters: their node address is known (the clusters component made it), so NodePort.
    Registered clusters: the service proxy (their nodes may be unreachable from here)."""
    return Via.SERVICE_PROXY if spec.kind == "external" else Via.NODEPORT


def probe_endpoint(
    settings: Settings, cluster: str, namespace: str, service: str, port: int | str | None, path: str,
    via: Via | None = None,
) -> Probe:
    """GET ``path`` on the app's Service the way ``via`` says (None: the cluster's default)."""
    try:
        spec = load(settings.data_dir, cluster)
    except NotFound:
        return Probe(False, None, "", f"unknown cluster '{cluster}' (see `conveyor cluster list`)")
    how = via or default_via(spec)
    if how is Via.SERVICE_PROXY:
        return probe_service(settings, cluster, namespace, service, port, path)
    return probe_node_port(settings, spec, namespace, service, port, path)


def probe_node_port(
    settings: Settings, spec: ClusterSpec, namespace: str, service: str, port: int | str | None, path: str
) -> Probe:
    """GET ``path`` on ``http://NODE:NODEPORT``: the node's address from the cluster's spec, the
    NodePort from the live Service (the cluster picks it when the chart does not)."""
    if spec.kind == "external":
        return Probe(False, None, "", f"cluster '{spec.name}' is registered, not local: Conveyor does not know its "
                                      "node addresses (verify with `via: service-proxy`)")
    what = f"Service {namespace}/{service}"
    try:
        with client_for(settings, spec.name) as kube:
            r = kube.http.get(f"/api/v1/namespaces/{namespace}/services/{service}")
    except (httpx.HTTPError, OSError) as exc:
        return Probe(False, None, "", f"reading {what}: {type(exc).__name__}: {exc}")
    if r.status_code != 200:
        return Probe(False, None, "", f"reading {what}: the API server answered {r.status_code}")
    node_port = _node_port(r.json(), port)
    if isinstance(node_port, str):
        return Probe(False, None, "", f"{what} {node_port}")
    url = f"http://{spec.node_ip}:{node_port}{path}"
    try:
        r = httpx.get(url, timeout=ENDPOINT_TIMEOUT)
    except httpx.HTTPError as exc:
        return Probe(False, None, "", f"GET {url}: {type(exc).__name__}: {exc}", url)
    return Probe(True, r.status_code, r.text[:2000], where=url)


def _node_port(svc: dict[str, Any], port: int | str | None) -> int | str:
    """The NodePort of ``port`` (a port name or number; None: the first port), or why there is none."""
    spec = svc.get("spec") or {}
    ports = spec.get("ports") or []
    chosen = next((p for p in ports if port is None or port in (p.get("name"), p.get("port"))), None)
    if chosen is None:
        return f"has no port {port!r}" if port is not None else "has no ports"
    if not chosen.get("nodePort"):
        return (f"is of type {spec.get('type', 'ClusterIP')} and has no NodePort: make it a NodePort Service, "
                "or verify with `via: service-proxy`")
    return int(chosen["nodePort"])


def pod_restarts(settings: Settings, cluster: str, namespace: str) -> int | None:
    """The container restarts of every pod in ``namespace`` (None when the cluster cannot be asked)."""
    try:
        with client_for(settings, cluster) as kube:
            r = kube.http.get(f"/api/v1/namespaces/{namespace}/pods")
    except (httpx.HTTPError, OSError, NotFound):
        return None
    if r.status_code != 200:
        return None
    return sum(int(c.get("restartCount", 0)) for pod in r.json().get("items", [])
               for c in (pod.get("status") or {}).get("containerStatuses") or [])

"""Reaching an environment's cluster: a Kubernetes API client by cluster name, and the app's endpoint."""

from __future__ import annotations

import httpx

from conveyor.clusters import KubeClient, admin_client, external, load
from conveyor.core import NotFound, Settings
from conveyor.delivery.ports import Probe


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
    return Probe(True, r.status_code, r.text[:2000])


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

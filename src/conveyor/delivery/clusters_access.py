"""Reaching an environment's cluster: a Kubernetes API client by cluster name, and the app's endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from conveyor.clusters import external, local
from conveyor.clusters import spec as specs
from conveyor.clusters.kubeapi import KubeClient
from conveyor.core import NotFound, Settings


def client_for(settings: Settings, cluster: str, timeout: float = 10.0) -> KubeClient:
    if not specs.exists(settings.data_dir, cluster):
        raise NotFound(f"unknown cluster '{cluster}' (see `conveyor cluster list`)", rule="env.cluster")
    spec = specs.load(settings.data_dir, cluster)
    if spec.kind == specs.EXTERNAL:
        return external.client(settings.data_dir, spec, timeout=timeout)
    return local.admin_client(settings.data_dir, spec, timeout=timeout)


@dataclass(frozen=True)
class Probe:
    ok: bool
    status: int | None
    body: str
    error: str | None = None


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

"""A minimal Kubernetes API client over httpx, enough for health, nodes and workload checks.

Conveyor's cluster component only needs a handful of GETs and a few writes; a full client library
is left to the components that manage workloads.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx

from conveyor.clusters.kubeconfig import Credentials


class KubeClient:
    def __init__(self, creds: Credentials, timeout: float = 10.0) -> None:
        self.creds = creds
        verify: ssl.SSLContext | bool
        if not creds.verify:
            verify = False
        else:
            verify = ssl.create_default_context(cafile=str(creds.ca_file) if creds.ca_file else None)
            if creds.cert_file and creds.key_file:
                verify.load_cert_chain(str(creds.cert_file), str(creds.key_file))
        headers = {"Accept": "application/json"}
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        self.http = httpx.Client(base_url=creds.server, verify=verify, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def healthy(self) -> bool:
        try:
            r = self.http.get("/readyz", timeout=3.0)
        except (httpx.HTTPError, ssl.SSLError, OSError):
            return False
        return r.status_code == 200

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params or None)
        r.raise_for_status()
        return r.json()

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, json=body, **kw)

    def apply(self, obj: dict[str, Any], field_manager: str = "conveyor-cluster") -> dict[str, Any]:
        """Server-side apply of one object of a kind in ``PLURALS`` (create or update, idempotent)."""
        r = self.http.patch(
            object_path(obj),
            params={"fieldManager": field_manager, "force": "true"},
            content=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        r.raise_for_status()
        return dict(r.json())

    def version(self) -> str:
        return str(self.get("/version").get("gitVersion", ""))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/nodes").get("items", []))

    def pods(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/pods").get("items", []))


def node_ready(node: dict[str, Any]) -> bool:
    for cond in node.get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


# the kinds Conveyor itself applies to a local cluster (its add-ons, the in-cluster agent), and their REST plural
PLURALS = {
    ("v1", "Namespace"): "namespaces",
    ("v1", "Secret"): "secrets",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("apps/v1", "Deployment"): "deployments",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "clusterroles",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "clusterrolebindings",
}


def object_path(obj: dict[str, Any]) -> str:
    api_version, kind = obj["apiVersion"], obj["kind"]
    plural = PLURALS[(api_version, kind)]
    meta = obj["metadata"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = meta.get("namespace")
    return f"{base}/namespaces/{ns}/{plural}/{meta['name']}" if ns else f"{base}/{plural}/{meta['name']}"

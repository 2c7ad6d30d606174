"""The agent's Kubernetes access, through lightkube.

Why lightkube rather than the official `kubernetes` client: it is typed (the agent is mypy-strict), it speaks
server-side apply directly (`apply(field_manager=, force=, dry_run=)`), it is small and fast (one pooled HTTP client,
no generated per-call deserialisation of every model), and its *generic* resources carry objects as plain dicts.
The agent uses only generic resources, even for built-in kinds, so that no field of a manifest is dropped or
reinterpreted client-side by a model that is older than the cluster: the API server is the only validator.
Kinds are resolved from lightkube's built-in resource table (plural, scope) and from CustomResourceDefinitions.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import httpx2
from lightkube import Client, KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core import resource as res
from lightkube.core.exceptions import ApiError, LoadResourceError
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import (
    GenericGlobalResource,
    GenericNamespacedResource,
    create_api_info,
)
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import PodLog

from conveyor.agent.objects import FIELD_MANAGER, ObjectId

GenericType = type[GenericGlobalResource] | type[GenericNamespacedResource]


class UnknownKind(Exception):
    pass


class NotServed(Exception):
    """The API server does not serve this resource (yet): a CRD not registered or not established."""


def _not_served(exc: httpx2.HTTPStatusError) -> Exception:
    """Turn lightkube's raw HTTP errors into ApiError (a Status body) or NotServed (404 for an unknown path)."""
    if exc.response.headers.get("content-type", "").startswith("application/json"):
        return ApiError(request=exc.request, response=exc.response)
    if exc.response.status_code == 404:
        return NotServed(f"{exc.request.method} {exc.request.url.path}: the API server does not serve this resource")
    return exc


def api_error_text(exc: ApiError) -> str:
    status = exc.status
    return str(status.message or status.reason or exc)


def connect(kubeconfig: Path | None, context: str | None = None, timeout: float = 30.0) -> Client:
    config: SingleConfig | KubeConfig | None = None
    if kubeconfig is not None:
        config = KubeConfig.from_file(str(kubeconfig)).get(context_name=context)
    return Client(config=config, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(timeout), lazy=False)


class Kinds:
    """apiVersion/kind -> a generic lightkube resource class, with the right plural and scope."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._types: dict[tuple[str, str], GenericType] = {}
        self._lock = threading.Lock()

    def _make(self, api_version: str, kind: str, plural: str, namespaced: bool) -> GenericType:
        group, _, version = api_version.rpartition("/")
        base = GenericNamespacedResource if namespaced else GenericGlobalResource
        cls = type(kind, (base,), {"_api_info": create_api_info(group, version, kind, plural)})
        return cast(GenericType, cls)

    def learn_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        with self._lock:
            for v in spec.get("versions") or []:
                api_version = f"{spec['group']}/{v['name']}"
                self._types[(api_version, names["kind"])] = self._make(
                    api_version, names["kind"], names["plural"], spec.get("scope") == "Namespaced"
                )

    def refresh_crds(self) -> None:
        for crd in self.client.list(CustomResourceDefinition):
            self.learn_crd(crd.to_dict())

    def type_of(self, api_version: str, kind: str) -> GenericType:
        key = (api_version, kind)
        with self._lock:
            if key in self._types:
                return self._types[key]
        try:
            model = resource_registry.load(api_version, kind)
        except (LoadResourceError, ModuleNotFoundError, ValueError):
            model = None
        if model is not None:
            made = self._make(api_version, kind, model._api_info.plural, issubclass(model, res.NamespacedResource))
        else:
            self.refresh_crds()
            with self._lock:
                if key in self._types:
                    return self._types[key]
            raise UnknownKind(f"no API serves {kind} in {api_version} (is its CRD installed?)")
        with self._lock:
            self._types[key] = made
        return made

    def namespaced(self, api_version: str, kind: str) -> bool:
        return issubclass(self.type_of(api_version, kind), GenericNamespacedResource)


class Kube:
    """Thin, dict-in dict-out operations used by the reconciler."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.kinds = Kinds(client)
        self._any: Any = client  # lightkube's overloads do not cover generic classes chosen at run time

    def close(self) -> None:
        self.client.close()

    def _instance(self, obj: dict[str, Any]) -> Any:
        cls: Any = self.kinds.type_of(obj["apiVersion"], obj["kind"])
        return cls(obj)

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        try:
            result = self.client.apply(self._instance(obj), field_manager=FIELD_MANAGER, force=True, dry_run=dry_run)
        except httpx2.HTTPStatusError as exc:
            raise _not_served(exc) from exc
        return dict(result)

    def create(self, obj: dict[str, Any]) -> bool:
        """Create only (never overwrite): False if the object already exists."""
        try:
            self._any.create(self._instance(obj), field_manager=FIELD_MANAGER)
        except ApiError as exc:
            if exc.status.code == 409:
                return False
            raise
        except httpx2.HTTPStatusError as exc:
            raise _not_served(exc) from exc
        return True

    def get(self, oid: ObjectId) -> dict[str, Any] | None:
        cls = self.kinds.type_of(oid.api_version, oid.kind)
        try:
            if oid.namespace:
                found = self._any.get(cls, oid.name, namespace=oid.namespace)
            else:
                found = self._any.get(cls, oid.name)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        except httpx2.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise
        return dict(found)

    def list(self, api_version: str, kind: str, namespace: str | None, labels: dict[str, str] | None = None
             ) -> list[dict[str, Any]]:
        cls = self.kinds.type_of(api_version, kind)
        kwargs: dict[str, Any] = {"labels": labels} if labels else {}
        if issubclass(cls, GenericNamespacedResource):
            kwargs["namespace"] = namespace or "*"
        # list items come without apiVersion and kind; put them back so they compare equal to single objects
        try:
            return [{"apiVersion": api_version, "kind": kind, **dict(o)} for o in self.client.list(cls, **kwargs)]
        except httpx2.HTTPStatusError as exc:
            raise _not_served(exc) from exc

    def delete(self, oid: ObjectId, *, wait_gone: bool = False) -> bool:
        """Delete with background propagation; False if it was already gone."""
        cls = self.kinds.type_of(oid.api_version, oid.kind)
        try:
            if oid.namespace:
                self._any.delete(cls, oid.name, namespace=oid.namespace)
            else:
                self._any.delete(cls, oid.name)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        except httpx2.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return False
            raise
        return True

    def pod_log(self, namespace: str, name: str, container: str, *, tail_lines: int, limit_bytes: int,
                previous: bool = False) -> str:
        """The last lines of one container's log (of its previous run when ``previous``), at most
        ``limit_bytes`` as the API server cuts it; lightkube's ``log`` has no limitBytes nor previous."""
        params = {"container": container, "tailLines": tail_lines, "limitBytes": limit_bytes,
                  "previous": "true" if previous else None}
        inner: Any = self._any._client
        request = inner.build_adapter_request(inner.prepare_request("get", PodLog, name=name, namespace=namespace,
                                                                    params=params))
        response = inner.send(request)
        inner.raise_for_status(response)
        return str(response.text)


class ListCache(Kube):
    """A Kube whose ``list`` answers from lists already read (``fill``), with the label selector applied here.

    health.py's rules list a workload's ReplicaSets and pods; for the object tree of a sync with 150
    Deployments that would be 300 requests per look, where one list per kind and namespace suffices.
    Kinds and namespaces not filled go to the API server as usual."""

    def __init__(self, kube: Kube) -> None:
        self.client, self.kinds, self._any = kube.client, kube.kinds, kube._any
        self.lists: dict[tuple[str, str, str], list[dict[str, Any]]] = {}

    def fill(self, api_version: str, kind: str, namespace: str) -> list[dict[str, Any]]:
        key = (api_version, kind, namespace)
        if key not in self.lists:
            self.lists[key] = Kube.list(self, api_version, kind, namespace)
        return self.lists[key]

    def list(self, api_version: str, kind: str, namespace: str | None, labels: dict[str, str] | None = None
             ) -> list[dict[str, Any]]:
        items = self.lists.get((api_version, kind, namespace or ""))
        if items is None:
            return Kube.list(self, api_version, kind, namespace, labels)
        want = (labels or {}).items()
        return [o for o in items if all(((o.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in want)]

"""The record of what a sync applied, stored in the cluster (one ConfigMap per sync).

It is written *before* a revision's objects are applied, as the union of the old and the new entries, and
narrowed to the new entries once pruning is done: a `kill -9` at any moment leaves every object the agent may
have created listed, so the next run can prune it.
"""

from __future__ import annotations

from typing import Any

from conveyor.agent.kube import Kube
from conveyor.agent.objects import SYNC_LABEL, ObjectId


def inventory_name(sync: str) -> str:
    return f"conveyor-inventory-{sync}"


def ensure_namespace(kube: Kube, name: str) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


class Inventory:
    def __init__(self, kube: Kube, namespace: str, sync: str) -> None:
        self.kube, self.namespace, self.sync = kube, namespace, sync
        self.id = ObjectId("v1", "ConfigMap", namespace, inventory_name(sync))

    def read(self) -> tuple[list[ObjectId], str | None]:
        cm = self.kube.get(self.id)
        if cm is None:
            return [], None
        data = cm.get("data") or {}
        entries = [ObjectId.parse(line) for line in data.get("entries", "").splitlines() if line.strip()]
        return entries, data.get("revision")

    def write(self, entries: list[ObjectId], revision: str) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.id.name, "namespace": self.namespace, "labels": {SYNC_LABEL: self.sync}},
            "data": {"revision": revision, "entries": "\n".join(e.encode() for e in sorted(set(entries)))},
        }
        self.kube.apply(body)

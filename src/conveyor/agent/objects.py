"""Object identity and the annotations the agent understands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIELD_MANAGER = "conveyor-agent"
FORCE_ANNOTATION = "conveyor.dev/force"  # "true": recreate the object when an immutable field changes
PRUNE_ANNOTATION = "conveyor.dev/prune"  # "disabled": never delete the object when it leaves the revision
SYNC_LABEL = "conveyor.dev/sync"


@dataclass(frozen=True, order=True)
class ObjectId:
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectId:
        meta = obj.get("metadata") or {}
        return cls(obj["apiVersion"], obj["kind"], str(meta.get("namespace") or ""), str(meta["name"]))

    @classmethod
    def parse(cls, text: str) -> ObjectId:
        api_version, kind, namespace, name = text.split("|")
        return cls(api_version, kind, namespace, name)

    def encode(self) -> str:
        return f"{self.api_version}|{self.kind}|{self.namespace}|{self.name}"

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def same_object(self, other: ObjectId) -> bool:
        """The same object, whatever API version names it."""
        return (self.group, self.kind, self.namespace, self.name) == (other.group, other.kind, other.namespace,
                                                                       other.name)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


def annotation(obj: dict[str, Any], key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)


def is_stage_one(obj_id: ObjectId) -> bool:
    """Cluster definitions that the rest of a revision may need: applied and waited for first."""
    return obj_id.kind in ("CustomResourceDefinition", "Namespace")

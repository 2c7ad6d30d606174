"""What applying a revision would change in the live cluster, without writing anything.

The same server-side dry run the agent validates with before applying: each object's dry-run result
is compared with the live object, so the preview is exactly what the agent would write. Used to put
a diff against the live cluster on GitOps pull requests before they merge.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conveyor.agent.apply import Applier, comparable
from conveyor.agent.kube import Kube, connect
from conveyor.agent.objects import ObjectId


@dataclass(frozen=True)
class Change:
    id: ObjectId
    action: str  # create | update | unchanged | delete
    diff: str = ""

    @property
    def label(self) -> str:
        ns = f"{self.id.namespace}/" if self.id.namespace else ""
        return f"{self.id.kind}/{ns}{self.id.name}"


def _hidden(body: dict[str, Any]) -> dict[str, Any]:
    """A Secret with its values hidden: the PR's diff shows its keys and that it changes, never a value
    (not even a digest, which would let a weak value be guessed offline)."""
    for field in ("data", "stringData"):
        if isinstance(body.get(field), dict):
            body[field] = {k: "(hidden)" for k in body[field]}
    return body


def _yaml(obj: Any) -> list[str]:
    if obj is None:
        return []
    body = dict(obj)
    body.pop("status", None)
    if body.get("kind") == "Secret":
        body = _hidden(body)
    return yaml.safe_dump(body, sort_keys=True).splitlines(keepends=True)


def preview(kube: Kube, objects: list[dict[str, Any]], previous: list[ObjectId] | None = None) -> list[Change]:
    """Per-object changes; raises ``RevisionInvalid`` when the cluster would refuse an object."""
    applier = Applier(kube)
    planned = applier.validate(applier.normalize(objects, None))
    changes = []
    for p in planned:
        if p.live is None:
            changes.append(Change(p.id, "create", "".join(difflib.unified_diff(
                [], _yaml(p.obj), "live", f"new {p.id.kind}"))))
        elif p.changed:
            changes.append(Change(p.id, "update", "".join(difflib.unified_diff(
                _yaml(comparable(p.live)), _yaml(comparable(p.dry)), "live", "after apply"))))
        else:
            changes.append(Change(p.id, "unchanged"))
    keep = [p.id for p in planned]
    for old in previous or []:
        if not any(old.same_object(k) for k in keep):
            changes.append(Change(old, "delete"))
    return changes


def preview_revision(kubeconfig: Path, context: str | None, objects: list[dict[str, Any]],
                     previous: list[dict[str, Any]] | None = None) -> list[Change]:
    """``preview`` against the cluster of a kubeconfig, ``previous`` being the revision applied now.

    Raises ``RevisionInvalid`` when the cluster would refuse an object, other exceptions when it
    cannot be reached.
    """
    kube = Kube(connect(kubeconfig, context))
    try:
        return preview(kube, objects, [ObjectId.of(o) for o in previous or []])
    finally:
        kube.close()

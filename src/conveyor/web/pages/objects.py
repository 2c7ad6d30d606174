"""An environment's objects as a tree (Deployment -> ReplicaSet -> Pod, Services, ...), Argo CD style:
the agent reports them as a flat list with parent ids (clusters/agent_reports.py checks and bounds it);
the pages nest them here and render them with the ``object_tree`` macro (templates/_macros.html)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TreeNode:
    obj: dict[str, Any]
    children: list[TreeNode] = field(default_factory=list)


def tree(objects: list[dict[str, Any]] | None) -> list[TreeNode]:
    """Roots in report order, each with its children; a parent that is not reported makes an object a root."""
    by_id: dict[str, TreeNode] = {}
    roots: list[TreeNode] = []
    for obj in objects or []:
        node = TreeNode(obj)
        parent = by_id.get(str(obj.get("parent"))) if obj.get("parent") else None
        (parent.children if parent is not None else roots).append(node)
        by_id.setdefault(str(obj.get("id")), node)
    return roots


def health_counts(objects: list[dict[str, Any]] | None) -> dict[str, int]:
    """How many objects are in each health state: the summary line above a tree."""
    counts: dict[str, int] = {}
    for obj in objects or []:
        counts[str(obj.get("health"))] = counts.get(str(obj.get("health")), 0) + 1
    return counts

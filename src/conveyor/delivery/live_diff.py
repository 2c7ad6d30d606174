"""The `conveyor/diff` check of a GitOps PR: what the environment's cluster would change if it merged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor.agent.apply import RevisionInvalid
from conveyor.agent.kube import Kube, connect
from conveyor.agent.objects import ObjectId
from conveyor.agent.preview import preview
from conveyor.clusters import Layout, load
from conveyor.core import Settings
from conveyor.core.yamlspec import RENDERED_LIMITS, safe_load_all

MAX_DIFF_LINES = 400


@dataclass(frozen=True)
class LiveDiff:
    state: str  # success | failure
    summary: str
    markdown: str


def _objects(text: str) -> list[dict[str, Any]]:
    return [d for d in safe_load_all(text, "rendered manifests", RENDERED_LIMITS) if isinstance(d, dict)]


def live_diff(settings: Settings, cluster: str, rendered: str, previous: str | None) -> LiveDiff:
    objects = _objects(rendered)
    before = [ObjectId.of(o) for o in _objects(previous)] if previous else []
    try:
        spec = load(settings.data_dir, cluster)
        kube = Kube(connect(Layout(settings.data_dir, spec).kubeconfig, spec.context))
    except Exception as exc:  # an unknown or unreachable cluster: say so, the schema check still ran
        return LiveDiff("success", f"manifests valid; live diff unavailable ({type(exc).__name__}: {exc})",
                        f"_Live diff unavailable: cluster `{cluster}` could not be reached ({exc})._\n")
    try:
        changes = preview(kube, objects, before)
    except RevisionInvalid as exc:
        refused = "\n".join(f"- `{e.id.kind}/{e.id.name}`: {e.message}" for e in exc.errors)
        return LiveDiff("failure", f"the cluster refuses: {exc}", f"**{cluster} would refuse:**\n{refused}\n")
    except Exception as exc:
        return LiveDiff("success", f"manifests valid; live diff unavailable ({type(exc).__name__})",
                        f"_Live diff unavailable: {exc}_\n")
    finally:
        kube.close()
    counts = {a: sum(c.action == a for c in changes) for a in ("create", "update", "delete", "unchanged")}
    summary = ", ".join(f"{n} {a}" for a, n in counts.items() if n) or "no objects"
    out = [f"**Server-side dry run against `{cluster}`:** {summary}\n"]
    budget = MAX_DIFF_LINES
    for c in changes:
        if c.action == "unchanged":
            continue
        out.append(f"\n`{c.action}` {c.label}\n")
        if c.diff and budget > 0:
            lines = c.diff.splitlines()
            out.append("```diff\n" + "\n".join(lines[:budget]) + "\n```\n")
            budget -= len(lines)
    return LiveDiff("success", f"dry run on {cluster}: {summary}", "".join(out))

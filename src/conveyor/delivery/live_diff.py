"""The `conveyor/diff` check of a GitOps PR: what the environment's cluster would change if it merged.

Built on the agent's planner (``conveyor.agent.preview_revision``): the same server-side dry run the
agent validates with before applying, so the diff is exactly what the agent would write.
"""

from __future__ import annotations

from typing import Any

from conveyor.agent import RevisionInvalid, preview_revision
from conveyor.clusters import Layout, load
from conveyor.core import Database, Settings
from conveyor.core.yamlspec import RENDERED_LIMITS, safe_load_all
from conveyor.delivery.ports import LiveDiff
from conveyor.registry import verify_images

MAX_DIFF_LINES = 400


def _objects(text: str) -> list[dict[str, Any]]:
    return [d for d in safe_load_all(text, "rendered manifests", RENDERED_LIMITS) if isinstance(d, dict)]


def signatures(db: Database | None, settings: Settings, objects: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """Markdown of the images' signature verdicts (what the cluster's agent will decide) and the failures."""
    if db is None:
        return "", []
    try:
        results = verify_images(db, settings, objects)
    except Exception as exc:  # the check reports; it never breaks the diff
        return f"_Image signatures not checked: {type(exc).__name__}: {exc}_\n", []
    if not results:
        return "", []
    lines = [f"- `{r.image}`: **{r.result}**" + (f" ({r.message})" if r.failed else "") for r in results]
    failed = [f"{r.image} ({r.result})" for r in results if r.failed]
    return "**Image signatures** (the agent refuses a revision whose Conveyor-built image fails):\n" + \
        "\n".join(lines) + "\n", failed


def live_diff(settings: Settings, cluster: str, rendered: str, previous: str | None,
              db: Database | None = None) -> LiveDiff:
    objects = _objects(rendered)
    sig_md, sig_failed = signatures(db, settings, objects)
    diff = _live_diff(settings, cluster, objects, previous)
    if not sig_failed:
        return LiveDiff(diff.state, diff.summary, diff.markdown + ("\n" + sig_md if sig_md else ""))
    return LiveDiff("failure", f"signature verification failed: {', '.join(sig_failed)}"[:900],
                    diff.markdown + "\n" + sig_md)


def _live_diff(settings: Settings, cluster: str, objects: list[dict[str, Any]], previous: str | None) -> LiveDiff:
    before = _objects(previous) if previous else []
    try:
        spec = load(settings.data_dir, cluster)
        kubeconfig = Layout(settings.data_dir, spec).kubeconfig
    except Exception as exc:  # an unknown cluster: say so, the schema check still ran
        return LiveDiff("success", f"manifests valid; live diff unavailable ({type(exc).__name__}: {exc})",
                        f"_Live diff unavailable: cluster `{cluster}` could not be reached ({exc})._\n")
    try:
        changes = preview_revision(kubeconfig, spec.context, objects, before)
    except RevisionInvalid as exc:
        refused = "\n".join(f"- `{e.id.kind}/{e.id.name}`: {e.message}" for e in exc.errors)
        return LiveDiff("failure", f"the cluster refuses: {exc}", f"**{cluster} would refuse:**\n{refused}\n")
    except Exception as exc:  # unreachable: the merge is not blocked by an outage of the preview
        return LiveDiff("success", f"manifests valid; live diff unavailable ({type(exc).__name__})",
                        f"_Live diff unavailable: {exc}_\n")
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

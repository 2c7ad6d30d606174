"""Who consumes which events: the one table every process fans out from.

``core.events.record`` writes one delivery per subscription whose topics match, in the caller's
transaction, whichever modules the recording process has imported — so no process can drop a
delivery by not knowing a consumer. The handlers are bound by the composition root (``server.py``)
of the process that runs the outbox worker; a delivery waits until a process with its handler
takes it. Topics are exact names or prefixes ending in ``.``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Subscription:
    consumer: str
    topics: tuple[str, ...]
    purpose: str

    def wants(self, topic: str) -> bool:
        return any(t == topic or (t.endswith(".") and topic.startswith(t)) for t in self.topics)


SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription("forge.webhooks", ("push", "pull_request.", "status"),
                 "deliveries to the repository's webhooks"),
    Subscription("pipelines.triggers", ("push", "pull_request.opened", "pull_request.synchronize",
                                        "pull_request.reopened"),
                 "PR heads queue `pr` runs; default-branch pushes queue (or batch) `ci` runs"),
    Subscription("pipelines.statuses", ("pipeline.run.",),
                 "`conveyor/pr` and `conveyor/ci` follow each run's state"),
    Subscription("pipelines.rebuilds", ("registry.base.updated",),
                 "a base image's new digest starts CI of each app built on it (a security update)"),
    Subscription("delivery.ci", ("pipeline.ci.succeeded",),
                 "a deployable CI run's release starts its promotions"),
    Subscription("delivery.gitops-checks", ("pull_request.opened", "pull_request.synchronize"),
                 "PRs to a GitOps repository's main get the `conveyor/environments` check"),
    Subscription("delivery.gitops-protection", ("push",),
                 "a new GitOps main re-applies every environment branch's protection"),
)


def subscribers(topic: str) -> list[str]:
    return [s.consumer for s in SUBSCRIPTIONS if s.wants(topic)]


def subscriptions_markdown() -> str:
    """The table as docs/architecture.md shows it (a test keeps that copy equal to this)."""
    rows = ["| consumer | topics | what it does |", "|---|---|---|"]
    for sub in SUBSCRIPTIONS:
        topics = ", ".join(f"`{t}*`" if t.endswith(".") else f"`{t}`" for t in sub.topics)
        rows.append(f"| `{sub.consumer}` | {topics} | {sub.purpose} |")
    return "\n".join(rows)

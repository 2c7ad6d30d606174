"""The promotion state machine as one table: each state's handler, the states it may move to, what it
waits for, and what an error in it means. The engine dispatches through it, the board shows
``waits_for`` from it, and ``docs/architecture.md`` renders it (``markdown_table``; a test keeps the
doc equal to it).

One transaction per step: the engine runs a state's handler in one transaction; a handler moves the
promotion at most once (plus older promotions it supersedes). The exception is the merge of a GitOps
PR: ``Forge.merge`` commits its own units of work, so the step records the intent
(``merge_requested``) in its transaction and merges after the commit (``Step.after_commit``); the
next step observes the merged PR. A crash in between is harmless either way (see ``request_merge``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from conveyor.delivery import steps
from conveyor.delivery.states import PromotionState as S

Handler = Callable[[steps.Step], None]


@dataclass(frozen=True)
class Transition:
    state: S
    handler: Handler | None  # None: terminal
    next: frozenset[S]
    waits_for: str  # in the reviewers' words, for the board and `app status`
    on_error: S | None = None  # where a refusal (ConveyorError) in the handler ends it; None: retried next tick

    @property
    def does(self) -> str:
        doc = (self.handler.__doc__ or "") if self.handler else ""
        return " ".join(doc.split())


def _t(state: S, handler: Handler | None, nxt: set[S], waits_for: str, on_error: S | None = None) -> Transition:
    return Transition(state, handler, frozenset(nxt), waits_for, on_error)


TRANSITIONS: dict[S, Transition] = {t.state: t for t in (
    _t(S.PENDING, steps.on_pending, {S.PR_OPEN, S.MERGED, S.FAILED, S.SUPERSEDED, S.REFUSED},
       "rendering manifests and opening the GitOps pull request", on_error=S.FAILED),
    _t(S.PR_OPEN, steps.on_pr_open, {S.MERGED, S.ABANDONED, S.SUPERSEDED, S.FAILED, S.EXPIRED, S.REFUSED},
       "the merge of the GitOps pull request"),
    _t(S.MERGED, steps.on_merged, {S.APPLIED, S.ROLLING_BACK, S.FAILED, S.ROLLBACK_FAILED},
       "apply by the cluster's agent"),
    _t(S.APPLIED, steps.on_applied, {S.SOAKING, S.VERIFIED, S.ROLLING_BACK, S.FAILED, S.ROLLBACK_FAILED},
       "verification of the running version"),
    _t(S.SOAKING, steps.on_soaking, {S.VERIFIED, S.ROLLING_BACK, S.FAILED, S.ROLLBACK_FAILED},
       "the soak time: staying healthy before the next environments"),
    _t(S.ROLLING_BACK, steps.on_rolling_back, {S.ROLLED_BACK, S.ROLLBACK_FAILED},
       "the rollback to be merged, applied and verified"),
    _t(S.VERIFIED, None, set(), "nothing: deployed and verified"),
    _t(S.FAILED, None, set(), "nothing: failed before anything of it was merged (or nothing to revert)"),
    _t(S.ROLLED_BACK, None, set(), "nothing: failed, and the previous version was restored and verified"),
    _t(S.ROLLBACK_FAILED, None, set(), "a person: the rollback failed, the environment needs attention"),
    _t(S.ABANDONED, None, set(), "nothing: its pull request was closed without merging"),
    _t(S.SUPERSEDED, None, set(), "nothing: a newer version of the app went to the environment"),
    _t(S.EXPIRED, None, set(), "nothing: its approvals did not come within the environment's expire_after"),
    _t(S.REFUSED, None, set(), "nothing: the version is marked bad (it failed and was rolled back)"),
)}

# The state a promotion ends in when its environment disappears from the GitOps repo's main.
GONE = {S.ROLLING_BACK: S.ROLLBACK_FAILED}


def ends_when_environment_gone(state: S) -> S:
    return GONE.get(state, S.FAILED)


def markdown_table() -> str:
    """The table as Markdown, for docs/architecture.md."""
    rows = ["| state | what a step does | next states | waits for |", "|---|---|---|---|"]
    for t in TRANSITIONS.values():
        nxt = ", ".join(f"`{n}`" for n in S if n in t.next) or "(terminal)"
        does = t.does or "—"
        if t.on_error:
            does += f" A refusal (invalid templates, refused PR) ends it as `{t.on_error}`."
        rows.append(f"| `{t.state}` | {does} | {nxt} | {t.waits_for} |")
    return "\n".join(rows) + "\n"

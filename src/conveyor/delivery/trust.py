"""Which CI runs may produce a deployable release (issue 12, delivery's side of the trust model).

Only a commit that is on the application repository's protected default branch gets into a
cluster: it reached that branch through the branch's rules (reviewed PRs, required checks; the
forge refuses direct pushes to protected branches at receive time). A CI run started by hand
(``POST /api/v1/repos/{repo}/runs``) or re-run may build any ref or commit; its success is recorded
as not deployable, with the rule that refused it, and no promotion starts. A run of a commit that
is on the protected default branch is deployable whatever started it (a rebuild of reviewed code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TRIGGERS = {"push": "a push", "manual": "started by hand", "retry": "a retry"}


@dataclass(frozen=True)
class SourceFacts:
    """What the forge says about the commit a CI run built."""

    default_branch: str
    protected: bool  # the default branch has a protection rule
    on_default_branch: bool  # the commit is the branch's tip or one of its ancestors


@dataclass(frozen=True)
class Refusal:
    rule: str
    message: str


def judge_source(run: dict[str, Any], facts: SourceFacts) -> Refusal | None:
    """None when the CI run's release may be deployed, else why not (the run's event payload)."""
    repo, sha = run.get("repo"), str(run.get("sha", ""))
    trigger = str(run.get("trigger") or "unknown")
    how = f"CI run #{run.get('number')} ({TRIGGERS.get(trigger, trigger)}, {run.get('ref') or 'no ref'})"
    main = f"refs/heads/{facts.default_branch}"
    if not facts.protected:
        return Refusal("cd.source-protected", f"{how} is not deployable: '{repo}' does not protect its default "
                                              f"branch '{facts.default_branch}', so nothing on it was reviewed")
    if run.get("ref") != main:
        return Refusal("cd.source-ref", f"{how} is not deployable: only CI runs of {main} are delivered")
    if not facts.on_default_branch:
        return Refusal("cd.source-commit", f"{how} is not deployable: commit {sha[:12]} is not on "
                                           f"'{facts.default_branch}'")
    return None

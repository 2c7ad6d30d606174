"""The states of a promotion (one app version into one environment). Transitions: ``transitions.py``."""

from __future__ import annotations

from enum import StrEnum


class PromotionState(StrEnum):
    PENDING = "pending"
    PR_OPEN = "pr_open"
    MERGED = "merged"
    APPLIED = "applied"
    SOAKING = "soaking"
    VERIFIED = "verified"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    ABANDONED = "abandoned"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    REFUSED = "refused"


S = PromotionState
ACTIVE_STATES = frozenset({S.PENDING, S.PR_OPEN, S.MERGED, S.APPLIED, S.SOAKING, S.ROLLING_BACK})
# Between its merge and its end: what holds the environment branch for "one deployment at a time".
DEPLOYING_STATES = frozenset({S.MERGED, S.APPLIED, S.SOAKING, S.ROLLING_BACK})
TERMINAL_STATES = frozenset(set(S) - ACTIVE_STATES)
# A change that reached its environment and then failed there (DORA's change failures).
FAILURE_STATES = frozenset({S.FAILED, S.ROLLED_BACK, S.ROLLBACK_FAILED})

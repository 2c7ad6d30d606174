"""The forge: git hosting over smart HTTP, branch protection, pull requests, statuses, webhooks.

Public interface for other components (pipelines, delivery, web):
"""

from conveyor.forge.commits import write_branch
from conveyor.forge.git import BareRepo, Identity
from conveyor.forge.pulls import (
    Mergeability,
    close_pr,
    create_pr,
    evaluate,
    get_pr,
    list_prs,
    merge_pr,
    pr_merged_as,
    revert_pr,
    review_pr,
)
from conveyor.forge.repos import bare, create_repo, get_repo, protection_for, set_protection
from conveyor.forge.statuses import CombinedStatus, combined_status, post_status

__all__ = [
    "BareRepo",
    "CombinedStatus",
    "Identity",
    "Mergeability",
    "bare",
    "close_pr",
    "combined_status",
    "create_pr",
    "create_repo",
    "evaluate",
    "get_pr",
    "get_repo",
    "list_prs",
    "merge_pr",
    "post_status",
    "pr_merged_as",
    "protection_for",
    "review_pr",
    "revert_pr",
    "set_protection",
    "write_branch",
]

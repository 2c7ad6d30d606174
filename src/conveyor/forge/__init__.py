"""The forge: git hosting over smart HTTP, branch protection, pull requests, statuses, webhooks.

Public interface for other components (pipelines, delivery, web):
"""

from conveyor.forge.commits import write_branch
from conveyor.forge.git import BareRepo, Identity
from conveyor.forge.models import Repository  # the record type get_repo returns (read it; query through here)
from conveyor.forge.pulls import (
    Mergeability,
    close_pr,
    create_pr,
    evaluate,
    get_pr,
    list_prs,
    merge_pr,
    open_pr_counts,
    pr_merged_as,
    revert_pr,
    review_pr,
)
from conveyor.forge.repos import bare, create_repo, get_repo, list_repos, protection_for, repo_by_id, set_protection
from conveyor.forge.statuses import CombinedStatus, StatusView, combined_status, post_status

__all__ = [
    "BareRepo",
    "CombinedStatus",
    "Identity",
    "Mergeability",
    "StatusView",
    "Repository",
    "bare",
    "close_pr",
    "combined_status",
    "create_pr",
    "create_repo",
    "evaluate",
    "get_pr",
    "get_repo",
    "list_prs",
    "list_repos",
    "merge_pr",
    "open_pr_counts",
    "post_status",
    "pr_merged_as",
    "protection_for",
    "repo_by_id",
    "review_pr",
    "revert_pr",
    "set_protection",
    "write_branch",
]

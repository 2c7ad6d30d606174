"""Tag protection: locks on deployed tags, per-repository immutable tag patterns, and release tags.

Release tags of first-party images are immutable by default, whoever pushes: under ``apps/``, a
``<version>-<build>`` tag (``1.2.0-17``) or a commit id names one build forever, so what an
environment runs (``repo:tag@digest``) can be neither moved nor deleted — nor garbage-collected,
since tagged manifests are live.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import NotFound, utcnow
from conveyor.registry.errors import RegistryError
from conveyor.registry.models import ImmutableTagRule, RegistryRepository, Tag
from conveyor.registry.names import glob_matches, prefix_matches

RELEASE_TAG = re.compile(r"^(?:[0-9]+\.[0-9]+\.[0-9]+[0-9A-Za-z.+]*-[0-9]+|[0-9a-f]{40})$")


def is_release_tag(repo: str, tag: str) -> bool:
    return repo.startswith("apps/") and bool(RELEASE_TAG.match(tag))


def immutable_rule(session: Session, repo: str, tag: str) -> ImmutableTagRule | None:
    for rule in session.execute(select(ImmutableTagRule)).scalars():
        if prefix_matches(rule.repository, repo) and glob_matches(rule.pattern, tag):
            return rule
    return None


def check_tag_change(session: Session, repo: str, tag: Tag, verb: str) -> None:
    """Refuse to move or delete a locked tag or one covered by an immutable pattern."""
    if tag.locked:
        raise RegistryError(
            "DENIED",
            f"tag '{repo}:{tag.name}' is locked (by {tag.locked_by}); it cannot be {verb}",
            detail={"repository": repo, "tag": tag.name, "rule": "registry.tag-locked"},
        )
    if is_release_tag(repo, tag.name):
        raise RegistryError(
            "DENIED",
            f"tag '{repo}:{tag.name}' is a release tag; release tags are immutable: it cannot be {verb}",
            detail={"repository": repo, "tag": tag.name, "rule": "registry.release-tag-immutable"},
        )
    rule = immutable_rule(session, repo, tag.name)
    if rule is not None:
        raise RegistryError(
            "DENIED",
            f"tag '{repo}:{tag.name}' is immutable (pattern '{rule.pattern}' on '{rule.repository}'); "
            f"it cannot be {verb}",
            detail={"repository": repo, "tag": tag.name, "rule": "registry.tag-immutable"},
        )


def get_tag(session: Session, repo: str, tag: str) -> Tag:
    row = session.execute(
        select(Tag).join(RegistryRepository, RegistryRepository.id == Tag.repo_id)
        .where(RegistryRepository.name == repo, Tag.name == tag)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no tag '{repo}:{tag}'", rule="registry.tag-unknown")
    return row


def set_lock(session: Session, repo: str, tag: str, actor: str, locked: bool) -> Tag:
    row = get_tag(session, repo, tag)
    row.locked = locked
    row.locked_by = actor if locked else None
    row.locked_at = utcnow() if locked else None
    return row

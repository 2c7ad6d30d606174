"""Tag protection: locks on deployed tags and per-repository immutable tag patterns."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import NotFound, utcnow
from conveyor.registry.errors import RegistryError
from conveyor.registry.models import ImmutableTagRule, RegistryRepository, Tag
from conveyor.registry.names import glob_matches, prefix_matches


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

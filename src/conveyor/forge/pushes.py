"""Turning accepted ref updates into push events and pull-request updates, exactly once.

The post-receive hook spools each push to ``<repo>/conveyor/spool/<push_id>.json``; the
server claims spool files after the git request ends (and at start-up, for pushes whose
request was cut short), and records each push once thanks to the unique ``push_id``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Database, Settings, record
from conveyor.forge.git import ZERO
from conveyor.forge.models import Push, Repository
from conveyor.forge.pr_events import sync_branch
from conveyor.forge.repos import get_repo, repo_path

log = logging.getLogger(__name__)


def apply_push(
    session: Session,
    settings: Settings,
    repo: Repository,
    push_id: str,
    pusher: str,
    updates: list[dict[str, str]],
    via: str = "git",
) -> bool:
    """Record one push; returns False when it had been recorded already."""
    if session.execute(select(Push.id).where(Push.push_id == push_id)).scalar_one_or_none() is not None:
        return False
    session.add(Push(repo_id=repo.id, push_id=push_id, pusher=pusher, updates=updates))
    session.flush()
    for u in updates:
        ref = u["ref"]
        branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
        payload: dict[str, Any] = {
            "repo": repo.name,
            "ref": ref,
            "branch": branch,
            "before": u["before"],
            "after": u["after"],
            "pusher": pusher,
            "created": u["before"] == ZERO,
            "deleted": u["after"] == ZERO,
            "default_branch": branch == repo.default_branch,
            "via": via,
        }
        record(session, actor=pusher, action="push", target=f"{repo.name}:{ref}", payload=payload)
        if branch is not None:
            sync_branch(session, settings, repo, branch, None if u["after"] == ZERO else u["after"], pusher)
    return True


def _spool_dir(settings: Settings, repo_name: str) -> Path:
    return repo_path(settings, repo_name) / "conveyor" / "spool"


def process_spool(db: Database, settings: Settings, repo_name: str) -> int:
    spool = _spool_dir(settings, repo_name)
    if not spool.is_dir():
        return 0
    claimed_dir = spool / ".claimed"
    claimed_dir.mkdir(exist_ok=True)
    done = 0
    for f in sorted(spool.glob("*.json"), key=lambda p: p.stat().st_mtime):
        claimed = claimed_dir / f.name
        try:
            os.rename(f, claimed)  # atomic: exactly one processor wins the file
        except FileNotFoundError:
            continue
        done += _process_claimed(db, settings, repo_name, claimed)
    return done


def _process_claimed(db: Database, settings: Settings, repo_name: str, path: Path) -> int:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.error("unreadable push spool file %s: %s", path, exc)
        path.rename(path.with_suffix(".bad"))
        return 0
    with db.session() as s:
        repo = get_repo(s, repo_name)
        apply_push(s, settings, repo, data["push_id"], data.get("pusher", "unknown"), data["updates"])
    path.unlink(missing_ok=True)
    return 1


def _last_recorded_tips(session: Session, repo: Repository, refs: set[str]) -> dict[str, str]:
    """Where this repo's recorded pushes last left each of ``refs`` (newest push first; forge's own
    table, so recovery does not read the event outbox as a data store)."""
    found: dict[str, str] = {}
    rows = session.execute(select(Push.updates).where(Push.repo_id == repo.id).order_by(Push.id.desc())
                           .execution_options(yield_per=200)).scalars()
    for updates in rows:
        for u in updates:
            if u["ref"] in refs and u["ref"] not in found:
                found[u["ref"]] = u["after"]
        if len(found) == len(refs):
            break
    return found


def record_unrecorded_tips(db: Database, settings: Settings, repo_name: str) -> int:
    """Record branch tips no push event knows of: the server died after git moved the ref and
    before the post-receive hook spooled it. Run after the spools were replayed."""
    from conveyor.forge.repos import bare

    n = 0
    with db.session() as s:
        repo = get_repo(s, repo_name)
        tips = bare(settings, repo).branches()
        known = _last_recorded_tips(s, repo, {f"refs/heads/{b}" for b in tips})
        for branch, tip in tips.items():
            ref = f"refs/heads/{branch}"
            if known.get(ref) == tip:
                continue
            before = known.get(ref, ZERO)
            push_id = "recovered-" + hashlib.sha256(f"{repo.id}|{ref}|{tip}".encode()).hexdigest()[:40]
            if apply_push(s, settings, repo, push_id, "unknown",
                          [{"before": str(before), "after": tip, "ref": ref}], via="recovered"):
                n += 1
    return n


def recover_spools(db: Database, settings: Settings, repo_name: str) -> int:
    """At start-up: replay claimed-but-unfinished and unclaimed spool files."""
    claimed_dir = _spool_dir(settings, repo_name) / ".claimed"
    n = 0
    if claimed_dir.is_dir():
        for f in sorted(claimed_dir.glob("*.json")):
            n += _process_claimed(db, settings, repo_name, f)
    return n + process_spool(db, settings, repo_name)

"""Start-up work of the forge: make disk, hooks and DB agree again after any crash."""

from __future__ import annotations

import logging

from conveyor.core import Database, Settings, bind
from conveyor.forge.pulls import recover_merges, resync_open_prs
from conveyor.forge.pushes import record_unrecorded_tips, recover_spools
from conveyor.forge.repos import install_hooks, list_repos, repo_path, write_protection_file
from conveyor.forge.webhooks import enqueue_deliveries

log = logging.getLogger(__name__)


def register() -> None:
    bind("forge.webhooks", enqueue_deliveries)


def recover(db: Database, settings: Settings) -> None:
    with db.session() as s:
        names = []
        for repo in list_repos(s):
            path = repo_path(settings, repo.name)
            if not path.exists():
                log.error("repository '%s' is in the database but missing on disk at %s", repo.name, path)
                continue
            install_hooks(path)  # the interpreter path may have changed since the last start
            write_protection_file(settings, repo, s)
            names.append(repo.name)
    n_merges = recover_merges(db, settings)
    n_pushes = sum(recover_spools(db, settings, name) for name in names)
    n_pushes += sum(record_unrecorded_tips(db, settings, name) for name in names)
    resync_open_prs(db, settings)
    if n_merges or n_pushes:
        log.warning("recovered %d interrupted merge(s) and %d unrecorded push(es)", n_merges, n_pushes)

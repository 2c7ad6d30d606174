"""First start: data dir, migrations, the admin user and its token file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import select

from conveyor.core.auth import Role
from conveyor.core.config import Settings
from conveyor.core.db import Database
from conveyor.core.events import record
from conveyor.core.identities import create_user, get_user, issue_token, list_tokens, revoke_token
from conveyor.core.models import User

ADMIN_TOKEN = "admin.token"


def _write_private(directory: Path, value: str) -> Path:
    """A new 0600 file in ``directory`` holding ``value``, synced; its name is unique to this call."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    return Path(name)


def write_secret(path: Path, value: str) -> None:
    """Replace ``path`` atomically: readers see the old value or the new one, never a part.

    The temporary name is unique per call: with one shared ``.tmp`` name, two writers truncated each
    other's file and the second ``os.replace`` found nothing to move.
    """
    os.replace(_write_private(path.parent, value), path)


def ensure_secret(path: Path, make: Callable[[], str]) -> str:
    """The value in ``path``, made by ``make()`` when the file does not exist yet: the first writer wins.

    For keys made on first use (the pipeline-secrets and signing keys), where two requests can both
    find the file missing. Checking and then writing let each make its own key and the last rename
    win, after the first had already encrypted with a key that was gone (and a reader could meet the
    shared temporary file half written): a 500, then secrets nobody could decrypt. ``os.link`` refuses
    an existing name, so exactly one candidate becomes the file and everyone reads that one.
    """
    if not path.exists():
        candidate = _write_private(path.parent, make())
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass  # another writer won; its value is the key
        finally:
            candidate.unlink()
    return path.read_text().strip()


def fernet_key(env: str, path: Path) -> Fernet:
    """An encryption key for values kept in the database: from the environment variable ``env`` (which
    servers and workers on other machines must share), else the data dir's key file at ``path``,
    made on first use (``ensure_secret``: two first users end with the same key)."""
    key = os.environ.get(env) or ensure_secret(path, lambda: Fernet.generate_key().decode())
    return Fernet(key.encode())


def bootstrap(settings: Settings, db: Database, rotate_admin_token: bool = False) -> Path | None:
    """Prepare storage; returns the admin token path when a token was written just now.

    The admin token file is re-issued when it is missing or when asked to rotate it; either way the
    tokens it held before are revoked, so a copy of an old file stops working.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    settings.repos_dir.mkdir(exist_ok=True)
    db.migrate()
    with db.session() as s:
        if s.execute(select(User).where(User.name == "admin")).scalar_one_or_none() is None:
            admin, token = create_user(s, "admin", Role.ADMIN.value)
            for row in list_tokens(s, admin):
                row.description = ADMIN_TOKEN
            record(s, actor="system", action="user.created", target="admin", payload={"role": "admin"})
        elif settings.admin_token_path.exists() and not rotate_admin_token:
            return None
        else:
            admin = get_user(s, "admin")
            for row in list_tokens(s, admin):
                if row.description in (ADMIN_TOKEN, "created with user"):
                    revoke_token(s, row, "system")
            token = issue_token(s, admin, ADMIN_TOKEN)
            record(s, actor="system", action="token.rotated", target="admin", payload={"file": ADMIN_TOKEN})
    write_secret(settings.admin_token_path, token)
    return settings.admin_token_path

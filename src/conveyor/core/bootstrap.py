"""First start: data dir, migrations, the admin user and its token file."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from conveyor.core.auth import Role
from conveyor.core.config import Settings
from conveyor.core.db import Database
from conveyor.core.events import record
from conveyor.core.identities import create_user, get_user, issue_token, list_tokens, revoke_token
from conveyor.core.models import User

ADMIN_TOKEN = "admin.token"


def write_secret(path: Path, value: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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

"""First start: data dir, migrations, the admin user and its token file."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from conveyor.core.auth import Role, create_user
from conveyor.core.config import Settings
from conveyor.core.db import Database
from conveyor.core.events import record
from conveyor.core.models import User


def write_secret(path: Path, value: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def bootstrap(settings: Settings, db: Database) -> Path | None:
    """Prepare storage; returns the admin token path when the admin was created just now."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    settings.repos_dir.mkdir(exist_ok=True)
    db.migrate()
    with db.session() as s:
        if s.execute(select(User).where(User.name == "admin")).scalar_one_or_none() is not None:
            if settings.admin_token_path.exists():
                return None
            # The token file was lost: issue a fresh one rather than lock the operator out.
            from conveyor.core.auth import get_user, issue_token

            token = issue_token(s, get_user(s, "admin"), "re-issued at start")
        else:
            _, token = create_user(s, "admin", Role.ADMIN.value)
            record(s, actor="system", action="user.created", target="admin", payload={"role": "admin"})
    write_secret(settings.admin_token_path, token)
    return settings.admin_token_path

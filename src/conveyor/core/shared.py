"""Values every server of an installation agrees on, kept in the database (``core_settings``).

Signing keys live here rather than in files of a data dir: two servers on one PostgreSQL
database then accept each other's session cookies and registry tokens.
"""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.core.db import Database
from conveyor.core.models import SharedSetting


def get_setting(session: Session, key: str) -> str | None:
    row = session.get(SharedSetting, key)
    return row.value if row is not None else None


def put_setting(session: Session, key: str, value: str) -> None:
    row = session.get(SharedSetting, key)
    if row is None:
        session.add(SharedSetting(key=key, value=value))
    else:
        row.value = value
    session.flush()


def shared_secret(db: Database, name: str, nbytes: int = 32) -> bytes:
    """The secret ``name``, created on first use; two servers creating it at once agree on one."""
    for _ in range(2):
        try:
            with db.session() as s:
                value = get_setting(s, name)
                if value is None:
                    value = secrets.token_hex(nbytes)
                    s.add(SharedSetting(key=name, value=value))
                return bytes.fromhex(value)
        except IntegrityError:
            continue  # another server inserted it first: read theirs
    raise RuntimeError(f"could not create the shared secret {name!r}")

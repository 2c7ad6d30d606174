"""Server-wide settings kept in the database, so that several servers sharing it agree.

Settings that must be the same on every server of an installation (today: the outbound
allow-list) cannot live in a server's environment: two servers started with different
variables would apply different policies to the same webhook. A row per key, JSON value.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.core.db import Database, utcnow
from conveyor.core.models import CoreSetting


def get_setting(session: Session, key: str, default: Any = None) -> Any:
    row = session.get(CoreSetting, key)
    return default if row is None else row.value


def put_setting(session: Session, key: str, value: Any, actor: str) -> None:
    row = session.get(CoreSetting, key)
    if row is None:
        session.add(CoreSetting(key=key, value=value, updated_by=actor, updated_at=utcnow()))
    else:
        row.value, row.updated_by, row.updated_at = value, actor, utcnow()


def shared_secret(db: Database, name: str, nbytes: int = 32) -> bytes:
    """The secret ``name``, created on first use; two servers creating it at once agree on one.

    Signing keys live here rather than in files of a data dir: two servers on one PostgreSQL
    database then accept each other's session cookies.
    """
    for _ in range(2):
        try:
            with db.session() as s:
                value = get_setting(s, name)
                if value is None:
                    value = secrets.token_hex(nbytes)
                    s.add(CoreSetting(key=name, value=value, updated_by="system", updated_at=utcnow()))
                return bytes.fromhex(str(value))
        except IntegrityError:
            continue  # another server inserted it first: read theirs
    raise RuntimeError(f"could not create the shared secret {name!r}")

"""Server-wide settings kept in the database, so that several servers sharing it agree.

Settings that must be the same on every server of an installation (today: the outbound
allow-list) cannot live in a server's environment: two servers started with different
variables would apply different policies to the same webhook. A row per key, JSON value.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from conveyor.core.db import utcnow
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

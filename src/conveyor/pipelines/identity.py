"""The pipelines' own identity: a real service user whose token workers use for git, statuses and pushes.

A service user (rather than a synthetic principal) shows up in the audit log and in statuses under
its own name, and its token can be revoked like any other. Each data directory keeps its token in
``pipelines.token`` (mode 0600); a worker on another machine issues its own on first start.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from conveyor.core import Database, Principal, Role, Settings, record
from conveyor.core.auth import authenticate_token, create_user, get_user, issue_token
from conveyor.core.bootstrap import write_secret
from conveyor.core.errors import Unauthorized
from conveyor.core.models import User

SERVICE_USER = "conveyor-pipelines"
SERVICE_PRINCIPAL = Principal(name=SERVICE_USER, role=Role.DEVELOPER)


def service_token(db: Database, settings: Settings) -> str:
    """The service user's token for this data directory, creating user and token as needed."""
    path = settings.data_dir / "pipelines.token"
    if path.exists():
        token = path.read_text().strip()
        try:
            with db.session() as s:
                authenticate_token(s, token)
            return token
        except Unauthorized:
            pass  # revoked or from another database: issue a new one
    for attempt in range(2):
        try:
            with db.session() as s:
                if s.execute(select(User).where(User.name == SERVICE_USER)).scalar_one_or_none() is None:
                    _, token = create_user(s, SERVICE_USER, Role.DEVELOPER.value)
                    record(s, actor="system", action="user.created", target=SERVICE_USER,
                           payload={"role": Role.DEVELOPER.value, "service": "pipelines"})
                else:
                    token = issue_token(s, get_user(s, SERVICE_USER), "pipelines worker")
            break
        except IntegrityError:  # another process created the user at the same moment
            if attempt:
                raise
    write_secret(path, token)
    return token

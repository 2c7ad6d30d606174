"""Users, roles and tokens: hashed at rest, refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from conveyor.core import Database, Forbidden, InvalidInput, Permission, Unauthorized
from conveyor.core.auth import ANONYMOUS, NOBODY, hash_password, verify_password
from conveyor.core.errors import Conflict
from conveyor.core.identities import authenticate_basic, authenticate_token, create_user
from conveyor.core.models import ApiToken, User


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'a.db'}")
    d.migrate()
    return d


def test_tokens_are_stored_hashed_and_authenticate(db: Database) -> None:
    with db.session() as s:
        _, token = create_user(s, "dana", "developer")
    with db.session() as s:
        stored = s.execute(select(ApiToken.token_hash)).scalar_one()
        assert token not in stored and len(stored) == 64
        p = authenticate_token(s, token)
        assert p.name == "dana" and p.can(Permission.WRITE) and not p.can(Permission.MANAGE_REPO)
        assert authenticate_basic(s, "dana", token).name == "dana"
        with pytest.raises(Unauthorized):
            authenticate_basic(s, "eve", token)
        with pytest.raises(Unauthorized):
            authenticate_token(s, token + "x")


def test_passwords_use_argon2(db: Database) -> None:
    with db.session() as s:
        create_user(s, "pat", "reviewer", password="correct horse")
    with db.session() as s:
        h = s.execute(select(User.password_hash).where(User.name == "pat")).scalar_one()
        assert h and h.startswith("$argon2")
        assert authenticate_basic(s, "pat", "correct horse").name == "pat"
        with pytest.raises(Unauthorized):
            authenticate_basic(s, "pat", "wrong")
    assert verify_password(hash_password("a"), "a") and not verify_password(hash_password("a"), "b")


def test_bad_users_are_refused(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(InvalidInput):
            create_user(s, "Bad Name", "developer")
        with pytest.raises(InvalidInput, match="unknown role"):
            create_user(s, "ok", "superuser")
        create_user(s, "ok", "developer")
        with pytest.raises(Conflict):
            create_user(s, "ok", "developer")


def test_anonymous_access_depends_on_configuration() -> None:
    ANONYMOUS.require(Permission.READ)
    with pytest.raises(Unauthorized):
        NOBODY.require(Permission.READ)
    with pytest.raises(Unauthorized):
        ANONYMOUS.require(Permission.WRITE)


def test_roles_map_to_permissions(db: Database) -> None:
    with db.session() as s:
        _, t = create_user(s, "ops", "cluster-admin")
        p = authenticate_token(s, t)
    p.require(Permission.MANAGE_REPO)
    with pytest.raises(Forbidden, match="does not allow 'manage-users'"):
        p.require(Permission.MANAGE_USERS)

"""Storage: migrations equal the models on both databases; the outbox delivers each event once per consumer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from conveyor.core import Database, events, record, subscriptions
from conveyor.core.db import Base
from conveyor.core.events import OutboxWorker
from conveyor.core.models import AuditEntry, Event, EventDelivery
from conveyor.core.registry_of_models import import_all_models
from conveyor.core.subscriptions import Subscription
from tests.support.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        url = pg.create_database()
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


def test_migrations_match_models(db: Database) -> None:
    import_all_models()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_migrate_is_idempotent(db: Database) -> None:
    db.migrate()
    db.migrate()


def test_outbox_delivers_once_per_consumer_and_retries_failures(db: Database) -> None:
    seen: dict[str, list[int]] = {"a": [], "b": []}
    failures = {"left": 1}

    def handler_a(session: object, ev: Event) -> None:
        seen["a"].append(ev.id)

    def handler_b(session: object, ev: Event) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("transient")
        seen["b"].append(ev.id)

    extra = (Subscription("test.a", ("thing.",), "test"), Subscription("test.b", ("thing.created",), "test"))
    original = subscriptions.SUBSCRIPTIONS
    subscriptions.SUBSCRIPTIONS = original + extra
    events.bind("test.a", handler_a)  # type: ignore[arg-type]
    events.bind("test.b", handler_b)  # type: ignore[arg-type]
    try:
        with db.session() as s:
            e1 = record(s, actor="t", action="thing.created", target="x", payload={"n": 1}).id
            e2 = record(s, actor="t", action="thing.deleted", target="x").id
            record(s, actor="t", action="other", target="y")
        worker = OutboxWorker(db)
        worker.drain()
        assert seen["a"] == [e1, e2]
        assert seen["b"] == []  # failed once, backing off
        with db.session() as s:
            d = s.execute(select(EventDelivery).where(EventDelivery.consumer == "test.b")).scalar_one()
            assert d.attempts == 1 and not d.done and "transient" in (d.last_error or "")
            d.available_at = d.available_at.replace(year=2000)
        worker.drain()
        assert seen["b"] == [e1]
        worker.drain()
        assert seen == {"a": [e1, e2], "b": [e1]}
        with db.session() as s:
            assert s.execute(select(func.count()).select_from(EventDelivery).where(EventDelivery.done.is_(False))
                             ).scalar_one() == 0
    finally:
        subscriptions.SUBSCRIPTIONS = original
        events._handlers.pop("test.a", None)
        events._handlers.pop("test.b", None)


def test_rolled_back_changes_publish_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as s:
        record(s, actor="t", action="thing.created", target="never")
        raise RuntimeError("abort")
    with db.session() as s:
        assert s.execute(select(Event).where(Event.payload["target"].as_string() == "never")).first() is None


def test_a_refusal_ends_a_delivery_at_once_and_visibly_while_other_errors_retry(db: Database) -> None:
    from conveyor.core.errors import InvalidInput

    given_up: list[tuple[int, str]] = []

    def refuses(session: object, ev: Event) -> None:
        raise InvalidInput("the pipeline file is not UTF-8", rule="pipeline.encoding")

    original = subscriptions.SUBSCRIPTIONS
    subscriptions.SUBSCRIPTIONS = original + (Subscription("test.c", ("doomed.",), "test"),)
    events.bind("test.c", refuses, lambda s, ev, err: given_up.append((ev.id, err)))  # type: ignore[arg-type]
    try:
        with db.session() as s:
            eid = record(s, actor="t", action="doomed.event", target="x").id
        OutboxWorker(db).drain()
        with db.session() as s:
            d = s.execute(select(EventDelivery).where(EventDelivery.consumer == "test.c")).scalar_one()
            assert d.done and d.failed and d.attempts == 1 and "pipeline.encoding" in (d.last_error or "")
            audit = s.execute(select(AuditEntry).where(AuditEntry.action == "outbox.gave_up")).scalar_one()
            assert audit.detail["consumer"] == "test.c"
        assert given_up == [(eid, "InvalidInput: the pipeline file is not UTF-8 [pipeline.encoding]")]
    finally:
        subscriptions.SUBSCRIPTIONS = original
        events._handlers.pop("test.c", None)


def test_every_subscription_has_a_handler_in_the_server() -> None:
    from conveyor.core import Settings
    from conveyor.server import register_components

    register_components(Settings())
    assert {s.consumer for s in subscriptions.SUBSCRIPTIONS} == set(events.bound())


def test_architecture_doc_shows_the_subscriptions() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs/architecture.md").read_text()
    assert subscriptions.subscriptions_markdown() in doc, "paste `subscriptions_markdown()` into 'Storage and events'"

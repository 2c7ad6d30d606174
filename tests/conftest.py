"""Shared fixtures: a real PostgreSQL for the run, real `conveyor up` servers on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Session fixtures of real clusters, imported here once so that every test package shares them.
from tests.support.clusters import (  # noqa: F401
    ClusterHandle,
    cluster_pair,
    clusters_home,
    create_cluster,
    hello_image,
    kube_binaries,
    registry_host,
    registry_server,
)
from tests.support.postgres import PostgresServer
from tests.support.server import ServerHandle

BACKENDS = ["sqlite", "postgres"]

# What makes a test slow here: a real cluster (Kubernetes binaries built from source on first use),
# the PostgreSQL server, images built with buildah, or Flux; the e2e demo tests mark themselves.
# `pytest -m "not slow"` keeps every component's logic on SQLite (the README's quick loop).
SLOW_FIXTURES = {"kube_binaries", "postgres", "hello_image", "flux_controllers"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and "postgres" in callspec.params.values()
        if on_postgres or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def cluster(clusters_home: Path, registry_host: str) -> ClusterHandle:  # noqa: F811
    """One real local cluster for the session, shared by the agent's and delivery's tests."""
    return create_cluster(clusters_home, "agent", [registry_host])


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    pg = PostgresServer().start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServerHandle]]:
    started: list[ServerHandle] = []
    on_postgres: list[ServerHandle] = []  # stopped before the database goes

    def make(backend: str = "sqlite", **extra_env: str) -> ServerHandle:
        url = None
        pg: PostgresServer | None = None
        if backend == "postgres":
            pg = request.getfixturevalue("postgres")
            url = pg.create_database()
        data = tmp_path_factory.mktemp(f"conveyor-{backend}") / "data"
        handle = ServerHandle(data_dir=Path(data), database_url=url, extra_env=extra_env).start()
        started.append(handle)
        if pg is not None:
            if not on_postgres:
                pg.before_stop.append(lambda: stop_all(on_postgres))
            on_postgres.append(handle)
        return handle

    yield make
    stop_all(started)


def stop_all(handles: list[ServerHandle]) -> None:
    """SIGTERM to every server first, then wait: stopped one after another, ~50 servers kept the end of
    the session waiting for about 8 minutes (each takes seconds to finish its background work)."""
    for h in handles:
        h.terminate()
    for h in handles:
        h.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    """One server per test module and backend; tests use distinct repository names."""
    return server_factory(request.param)

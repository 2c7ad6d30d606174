"""Shared fixtures: a real PostgreSQL for the run, real `conveyor up` servers on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
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
# the PostgreSQL server, images built with buildah, Flux, or cosign and sops (built from their Go
# modules on first use: minutes each on a cold machine); the e2e demo tests mark themselves.
# `pytest -m "not slow"` keeps every component's logic on SQLite (the README's quick loop).
SLOW_FIXTURES = {"kube_binaries", "postgres", "hello_image", "flux_controllers", "cosign", "sops_bin"}


# The longest files, first: the test command runs files on parallel workers (pytest-xdist, --dist
# loadfile, in this order), and a demo that starts last would keep the whole run waiting on it alone.
LONGEST_FIRST = ("tests/e2e/test_demo_flux.py", "tests/e2e/test_demo.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and "postgres" in callspec.params.values()
        if on_postgres or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest keep order


@pytest.fixture(scope="session")
def cluster(clusters_home: Path, registry_host: str) -> ClusterHandle:  # noqa: F811
    """One real local cluster for the session, shared by the agent's and delivery's tests."""
    return create_cluster(clusters_home, "agent", [registry_host])


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    pg = PostgresServer().start()
    yield pg
    pg.stop()


class ServerFactory:
    """Starts real `conveyor up` servers; each is asked to stop when the test module that started it
    ends (``_module_servers``) and waited for at the end of the session.

    An idle server is not free: its background loops poll the database, measured at 4-12% of a core
    each here. Kept to the session's end, the ~40 servers three workers had started by half-way burned
    more than a core between them while the tests that needed them were long over."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
        self.tmp_path_factory, self.request = tmp_path_factory, request
        self.started: list[ServerHandle] = []
        self.on_postgres: list[ServerHandle] = []  # stopped before the database goes

    def __call__(self, backend: str = "sqlite", **extra_env: str) -> ServerHandle:
        url = None
        pg: PostgresServer | None = None
        if backend == "postgres":
            pg = self.request.getfixturevalue("postgres")
            url = pg.create_database()
        data = self.tmp_path_factory.mktemp(f"conveyor-{backend}") / "data"
        handle = ServerHandle(data_dir=Path(data), database_url=url, extra_env=extra_env).start()
        self.started.append(handle)
        if pg is not None:
            if not self.on_postgres:
                pg.before_stop.append(lambda: stop_all(self.on_postgres))
            self.on_postgres.append(handle)
        return handle


@pytest.fixture(scope="session")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path_factory, request)
    yield factory
    stop_all(factory.started)


@pytest.fixture(scope="module", autouse=True)
def _module_servers(server_factory: ServerFactory) -> Iterator[None]:
    """SIGTERM, without waiting, to the servers this module started, once its last test and fixture are
    done (autouse: set up first, so torn down after the module's own fixtures that may still use them)."""
    mark = len(server_factory.started)
    yield
    for handle in server_factory.started[mark:]:
        handle.terminate()


def stop_all(handles: list[ServerHandle]) -> None:
    """SIGTERM to every server first, then wait: stopped one after another, ~50 servers kept the end of
    the session waiting for about 8 minutes (each takes seconds to finish its background work)."""
    for h in handles:
        h.terminate()
    for h in handles:
        h.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> Iterator[ServerHandle]:
    """One server per test module and backend; tests use distinct repository names."""
    handle = server_factory(request.param)
    yield handle
    handle.terminate()  # pytest ends the sqlite one before it starts the postgres one

"""Dashboard tests run against one live server on SQLite with demo data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.server import ServerHandle
from tests.web.demo import Demo, build


@pytest.fixture(scope="module")
def web_server(server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return server_factory("sqlite")


@pytest.fixture(scope="module")
def demo(web_server: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build(web_server, Path(tmp_path_factory.mktemp("web-demo")))

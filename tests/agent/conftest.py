"""The agent's tests run against one real local cluster and a real `conveyor up` (the forge the agent reports to).

The cluster and registry fixtures come from tests/support/clusters.py (imported once, in tests/conftest.py, so
every test package shares one session of them); the `conveyor up` that serves the cluster's registry is also the
forge here, so a session starts one server and one cluster.
"""

from __future__ import annotations

import pytest

from tests.support.server import ServerHandle


@pytest.fixture(scope="session")
def forge(registry_server: ServerHandle) -> ServerHandle:
    return registry_server

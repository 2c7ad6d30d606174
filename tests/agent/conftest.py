"""The agent's tests run against one real local cluster and a real `conveyor up` (the forge the agent reports to).

The cluster and registry fixtures come from tests/support/clusters.py; the `conveyor up` that serves the cluster's
registry is also the forge here, so a session starts one server and one cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.clusters import (  # noqa: F401
    ClusterHandle,
    clusters_home,
    create_cluster,
    hello_image,
    kube_binaries,
    registry_host,
    registry_server,
)
from tests.support.server import ServerHandle


@pytest.fixture(scope="session")
def cluster(clusters_home: Path, registry_host: str) -> ClusterHandle:  # noqa: F811
    return create_cluster(clusters_home, "agent", [registry_host])


@pytest.fixture(scope="session")
def forge(registry_server: ServerHandle) -> ServerHandle:  # noqa: F811
    return registry_server

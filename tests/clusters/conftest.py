"""Cluster fixtures live in tests/support/clusters.py so other components' tests can reuse them."""

from tests.support.clusters import (  # noqa: F401
    cluster_pair,
    clusters_home,
    hello_image,
    kube_binaries,
    registry_host,
    registry_server,
)

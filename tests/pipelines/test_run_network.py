"""Run networks of two servers on one machine: a runner starting up sweeps only what its own
predecessors (same server, same runner name) left. Every `conveyor up` here has a runner named
`builtin-<host>`; before the server was part of the name, one server's runner starting deleted the
network namespace of another server's run while it ran (podman: "cannot find specified network
namespace path"). Real network namespaces; needs root like the runner itself."""

from __future__ import annotations

import os
import uuid

import pytest

from conveyor.core import netns
from conveyor.pipelines.runner import network


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_a_runner_sweeps_its_own_leftovers_and_never_another_servers_run_network() -> None:
    runner = f"builtin-t{uuid.uuid4().hex[:6]}"
    a, b = "http://127.0.0.1:41001", "http://127.0.0.1:41002"
    mine_old = network._name(a, runner, "oldinstance", 1)
    other_running = network._name(b, runner, "otherinst", 2)
    for name in (mine_old, other_running):
        netns.create(name)
    try:
        assert mine_old != other_running
        assert network.sweep(a, runner, "newinstance") == 1  # server a's runner, started again
        assert not netns.path(mine_old).exists()
        assert netns.path(other_running).exists()  # server b's run keeps its network
    finally:
        for name in (mine_old, other_running):
            if netns.path(name).exists():
                netns.delete(name)

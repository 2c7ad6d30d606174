"""How an endpoint's answer is judged (status, text, the dependency it reports) and which NodePort
verification asks for; the real requests are in tests/delivery/test_nodeport_verification.py."""

from __future__ import annotations

import json

import pytest

from conveyor.clusters import ClusterSpec
from conveyor.delivery.clusters_access import _node_port, default_via
from conveyor.delivery.environments import Verify, Via
from conveyor.delivery.ports import Probe
from conveyor.delivery.verification import judge

WITH_COUNTER = Verify(path="/", dependency="counter")


def answer(**body: object) -> Probe:
    return Probe(True, 200, json.dumps({"app": "hello", "version": "1.1.0-3", **body}), where="http://n:30080/")


def test_the_dependency_must_say_ok() -> None:
    assert judge(WITH_COUNTER, answer(counter={"ok": True, "hits": 4})) == (
        True, "GET / answered 200; its dependency 'counter' answered")
    ok, why = judge(WITH_COUNTER, answer(counter={"ok": False, "url": "http://hello-counter.hello-dev.svc."
                                                  "cluster.local:80", "error": "URLError: [Errno 111] refused"}))
    assert not ok
    assert why == ("GET / answered 200, but its dependency 'counter' did not answer at "
                   "http://hello-counter.hello-dev.svc.cluster.local:80: URLError: [Errno 111] refused")


@pytest.mark.parametrize(("body", "reason"), [
    ('{"app": "hello"}', "the answer does not report its dependency 'counter'"),
    ('{"counter": "fine"}', "the answer does not report its dependency 'counter'"),
    ("<html>", "the answer is not JSON (dependency 'counter' expected in it)"),
    ('{"counter": {"ok": "yes"}}', "its dependency 'counter' did not answer: no reason given"),
])
def test_an_answer_without_the_dependency_fails_and_says_why(body: str, reason: str) -> None:
    ok, why = judge(WITH_COUNTER, Probe(True, 200, body))
    assert not ok and reason in why


def test_status_and_errors_come_first_as_before() -> None:
    assert judge(WITH_COUNTER, Probe(False, None, "", "GET http://n:1/: ConnectError: refused")) == (
        False, "GET http://n:1/: ConnectError: refused")
    assert judge(WITH_COUNTER, Probe(True, 503, "starting")) == (
        False, "GET / answered 503, expected 200: starting")
    assert judge(Verify(path="/healthz"), Probe(True, 200, "ok")) == (True, "GET /healthz answered 200")


def test_local_clusters_verify_through_nodeports_registered_ones_through_the_proxy() -> None:
    assert default_via(ClusterSpec(name="nonprod")) is Via.NODEPORT
    assert default_via(ClusterSpec(name="eks", kind="external")) is Via.SERVICE_PROXY


def test_the_node_port_of_the_named_or_first_port() -> None:
    svc = {"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 31001},
                                                  {"name": "admin", "port": 81, "nodePort": 31002}]}}
    assert _node_port(svc, None) == 31001
    assert _node_port(svc, "admin") == 31002 and _node_port(svc, 81) == 31002
    assert _node_port(svc, "metrics") == "has no port 'metrics'"
    cluster_ip = {"spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}}
    assert _node_port(cluster_ip, None) == ("is of type ClusterIP and has no NodePort: make it a NodePort Service, "
                                            "or verify with `via: service-proxy`")

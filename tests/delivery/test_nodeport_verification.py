"""CD's verification as users reach the app, on a real cluster: examples/hello's own image (built on the
locally made Debian base) and its own chart, rendered as CD renders it, with its counter behind a
ClusterIP Service; verification asks hello through its NodePort on the node's address and needs the
counter's answer in hello's. With the counter scaled to zero, hello still answers and says why, and the
verdict names it."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conveyor.core import Settings, containers
from conveyor.delivery import Via, probe_endpoint
from conveyor.delivery.environments import Verify
from conveyor.delivery.verification import judge
from conveyor.images.debian import build_and_import
from conveyor.templates import ImageRef, TemplateBundle, render
from tests.support.clusters import ClusterHandle, deployment_available, push_image
from tests.support.server import ServerHandle

pytestmark = pytest.mark.slow

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"
NAMESPACE = "hello-verify"
# What the demo's environments ask (platform.init_gitops): hello's GET /, with its counter's answer.
VERIFY = Verify(path="/", dependency="counter")
COUNTER_URL = f"http://hello-counter.{NAMESPACE}.svc.cluster.local:80"


@pytest.fixture(scope="module")
def hello_app_image(registry_server: ServerHandle, registry_host: str) -> Iterator[str]:
    """examples/hello's Dockerfile built on cache/debian-python:12 (debootstrap, cached outside the
    checkout), pushed to the clusters' registry, as the pipeline's image-build does."""
    token = registry_server.admin_token
    build_and_import(registry_host, "admin", token, log=lambda line: print(line, flush=True))
    local = f"localhost/conveyor-test-hello-app:{os.getpid()}"
    p = subprocess.run(containers.buildah(
        "bud", "--layers=false", "--pull=always", "--tls-verify=false", "-t", local, "-f", str(HELLO / "Dockerfile"),
        "--build-arg", f"BASE_IMAGE={registry_host}/cache/debian-python:12", "--build-arg", "APP_VERSION=1.1.0-7",
        str(HELLO)), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    dest = f"{registry_host}/apps/hello:1.1.0-7"
    push_image(local, dest, f"admin:{token}")
    yield dest
    subprocess.run(containers.buildah("rmi", "-f", local), capture_output=True)


@pytest.fixture(scope="module")
def deployed(cluster: ClusterHandle, hello_app_image: str) -> ClusterHandle:
    """hello and its counter from the chart, rendered with CD's renderer, applied to the cluster."""
    repository, tag = hello_app_image.rsplit(":", 1)
    manifests = render(TemplateBundle.from_directory(HELLO / "chart", "helm"), app="hello", namespace=NAMESPACE,
                       values={}, image=ImageRef(repository, tag))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(manifests)
        f.flush()
        cluster.kubectl("apply", "-f", f.name)
    for name in [d["metadata"]["name"] for d in yaml.safe_load_all(manifests) if d["kind"] == "Deployment"]:
        cluster.wait_for(f"Deployment {name} Available",
                         lambda n=name: deployment_available(cluster, NAMESPACE, n), timeout=300)
    return cluster


Said = tuple[tuple[bool, str], str, str]


def verdict(cluster: ClusterHandle, via: Via | None = None) -> Said:
    """(the verdict CD records, where it asked, what hello answered)."""
    probe = probe_endpoint(Settings(data_dir=cluster.data_dir), cluster.name, NAMESPACE, "hello", None, "/", via)
    return judge(VERIFY, probe), probe.where, probe.body


def settled(cluster: ClusterHandle, passing: bool, via: Via | None = None) -> Said:
    """The verdict once it is ``passing`` (or the last one after 120 s), as CD asks again until its
    verify timeout: kube-proxy writes a Service's rules for new endpoints a moment after the pods are
    Ready, and until then the Service refuses connections."""
    last: list[Said] = []

    def check() -> bool:
        last[:] = [verdict(cluster, via)]
        return last[0][0][0] is passing

    deadline = time.monotonic() + 120
    while not check() and time.monotonic() < deadline:
        time.sleep(1)
    return last[0]


def test_verification_goes_through_the_node_port_and_needs_the_counters_answer(deployed: ClusterHandle) -> None:
    svc = deployed.get(f"/api/v1/namespaces/{NAMESPACE}/services/hello")
    assert svc["spec"]["type"] == "NodePort"
    node_port = svc["spec"]["ports"][0]["nodePort"]
    (ok, why), where, body = settled(deployed, True)  # a local cluster: NodePort by default
    assert (ok, why) == (True, "GET / answered 200; its dependency 'counter' answered"), body
    assert where == f"http://{deployed.spec.node_ip}:{node_port}/"
    answer = json.loads(body)
    assert answer["version"] == "1.1.0-7"
    assert answer["counter"]["ok"] is True and answer["counter"]["version"] == "1.1.0-7"
    # each request is one visit counted by the counter, which hello reached by its Service's DNS name
    assert json.loads(verdict(deployed)[2])["counter"]["hits"] > answer["counter"]["hits"]
    # the service proxy (registered clusters' way in) reaches the same app
    (ok, _), where, _ = settled(deployed, True, Via.SERVICE_PROXY)
    assert ok and where == f"the service proxy of {NAMESPACE}/hello:http"


def test_with_the_counter_down_hello_still_answers_and_the_verdict_names_the_dependency(
    deployed: ClusterHandle,
) -> None:
    deployed.kubectl("scale", "-n", NAMESPACE, "deployment/hello-counter", "--replicas=0")
    try:
        deployed.wait_for("the counter's pods gone", lambda: not deployed.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app.kubernetes.io/name=hello-counter")["items"])
        (ok, why), _, body = settled(deployed, False)
        assert not ok
        assert why.startswith(f"GET / answered 200, but its dependency 'counter' did not answer at {COUNTER_URL}: "), \
            why
        assert json.loads(body)["version"] == "1.1.0-7"  # hello itself is up and says which part is not
    finally:
        deployed.kubectl("scale", "-n", NAMESPACE, "deployment/hello-counter", "--replicas=1")
    deployed.wait_for("Deployment hello-counter Available",
                      lambda: deployment_available(deployed, NAMESPACE, "hello-counter"))
    assert settled(deployed, True)[0][0]  # back up: verification passes again


def test_a_service_without_a_node_port_is_refused_with_the_rule(deployed: ClusterHandle) -> None:
    (ok, why), _, _ = verdict_of(deployed, "hello-counter")
    assert not ok
    assert why == (f"Service {NAMESPACE}/hello-counter is of type ClusterIP and has no NodePort: make it a NodePort "
                   "Service, or verify with `via: service-proxy`")


def verdict_of(cluster: ClusterHandle, service: str) -> tuple[tuple[bool, str], str, str]:
    probe = probe_endpoint(Settings(data_dir=cluster.data_dir), cluster.name, NAMESPACE, service, None, "/hits")
    return judge(Verify(path="/hits"), probe), probe.where, probe.body

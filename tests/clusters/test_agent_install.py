"""What `conveyor agent install` applies (its objects, built without a cluster) and where its syncs come from
(the server's environments of a cluster). The real install is tests/agent/test_in_cluster.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from conveyor.clusters.agent_install import Install, Sync, environment_syncs, manifests, parse_sync, repo_of
from tests.forge.helpers import unique
from tests.support.server import ServerHandle

FORGE = "http://host.conveyor.internal:8080"


def _install(token: str = "cnv_secret-token", webhook_secret: str | None = None) -> Install:
    return Install(cluster="alpha", image="127.0.0.1:8080/conveyor/agent@sha256:" + "0" * 64, forge_url=FORGE,
                   token=token, agent_user="agent-alpha", registry="127.0.0.1:8080",
                   syncs=(parse_sync("dev=platform/gitops@env/dev:rendered", FORGE),
                          parse_sync("qa=platform/gitops@env/qa:rendered", FORGE)),
                   webhook_secret=webhook_secret)


def _by_kind(objs: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objs}  # type: ignore[index]


def test_the_objects_run_one_agent_with_its_token_in_a_secret_only() -> None:
    objs = manifests(_install())
    assert [o["kind"] for o in objs] == ["Namespace", "ServiceAccount", "ClusterRoleBinding", "Secret", "Secret",
                                         "ConfigMap", "Deployment", "Service"]
    kinds = _by_kind(objs)
    dep = kinds["Deployment/conveyor-agent"]["spec"]
    assert dep["replicas"] == 1 and dep["strategy"] == {"type": "Recreate"}  # type: ignore[index]
    (container,) = dep["template"]["spec"]["containers"]  # type: ignore[index]
    assert container["readinessProbe"]["httpGet"]["path"] == "/status"
    assert container["args"] == ["run", "--config", "/etc/conveyor-agent/agent.yaml"]
    config = yaml.safe_load(kinds["ConfigMap/conveyor-agent"]["data"]["agent.yaml"])  # type: ignore[index]
    assert config["forge"]["server"] == FORGE and "token" not in config["forge"]
    assert config["syncs"][0]["url"] == f"{FORGE}/git/platform/gitops.git"
    assert (config["syncs"][0]["branch"], config["syncs"][0]["path"]) == ("env/dev", "rendered")
    assert kinds["Secret/conveyor-agent"]["stringData"] == {"token": "cnv_secret-token"}
    assert "cnv_secret-token" not in yaml.safe_dump([kinds["ConfigMap/conveyor-agent"], kinds["Deployment/"
                                                                                                "conveyor-agent"]])
    binding = kinds["ClusterRoleBinding/conveyor-agent"]
    assert binding["roleRef"]["name"] == "cluster-admin"  # type: ignore[index]


def test_a_new_token_rolls_the_pod() -> None:
    def checksum(token: str) -> str:
        dep = _by_kind(manifests(_install(token)))["Deployment/conveyor-agent"]
        return str(dep["spec"]["template"]["metadata"]["annotations"]["conveyor.dev/config-checksum"])  # type: ignore[index]

    assert checksum("cnv_a") != checksum("cnv_b")
    assert checksum("cnv_a") == checksum("cnv_a")


def test_with_webhooks_the_service_is_a_node_port_and_the_secret_reaches_every_sync_from_the_secret() -> None:
    plain = _by_kind(manifests(_install()))
    assert plain["Service/conveyor-agent"]["spec"]["type"] == "ClusterIP"  # type: ignore[index]
    config = yaml.safe_load(plain["ConfigMap/conveyor-agent"]["data"]["agent.yaml"])  # type: ignore[index]
    assert not any("webhook_secret_env" in sync for sync in config["syncs"])  # no secret: webhooks refused

    kinds = _by_kind(manifests(_install(webhook_secret="hook-secret-value")))
    assert kinds["Service/conveyor-agent"]["spec"]["type"] == "NodePort"  # type: ignore[index]
    assert kinds["Secret/conveyor-agent"]["stringData"] == {"token": "cnv_secret-token",
                                                            "webhook-secret": "hook-secret-value"}
    config = yaml.safe_load(kinds["ConfigMap/conveyor-agent"]["data"]["agent.yaml"])  # type: ignore[index]
    assert [sync["webhook_secret_env"] for sync in config["syncs"]] == ["CONVEYOR_WEBHOOK_SECRET"] * 2
    (container,) = kinds["Deployment/conveyor-agent"]["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    env = {e["name"]: e for e in container["env"]}
    assert env["CONVEYOR_WEBHOOK_SECRET"]["valueFrom"] == {"secretKeyRef": {"name": "conveyor-agent",
                                                                             "key": "webhook-secret"}}
    assert "hook-secret-value" not in yaml.safe_dump([kinds["ConfigMap/conveyor-agent"],
                                                      kinds["Deployment/conveyor-agent"]])
    assert [repo_of(s) for s in _install().syncs] == ["platform/gitops", "platform/gitops"]


def test_sync_options_are_checked() -> None:
    assert parse_sync("apps=team/ops@main", FORGE) == Sync("apps", f"{FORGE}/git/team/ops.git", "main", ".")
    for bad in ("apps", "apps=team/ops", "=team/ops@main", "apps=@main"):
        with pytest.raises(ValueError, match="NAME=REPO@BRANCH"):
            parse_sync(bad, FORGE)


def test_environments_of_two_repositories_with_one_name_get_distinct_syncs() -> None:
    envs = [{"repo": "a/ops", "env": "dev", "branch": "env/dev", "path": "rendered"},
            {"repo": "b/ops", "env": "dev", "branch": "env/dev", "path": "rendered"},
            {"repo": "b/ops", "env": "qa", "branch": "env/qa", "path": "rendered"}]
    syncs = environment_syncs(envs, FORGE)
    assert [s.name for s in syncs] == ["a-ops-dev", "b-ops-dev", "qa"]
    assert all(s.create_namespaces and s.path == "rendered" for s in syncs)


@pytest.fixture(scope="module")
def srv(server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return server_factory("sqlite")


def test_the_server_lists_the_environments_a_cluster_runs(srv: ServerHandle) -> None:
    api = srv.api()
    cluster, other = unique("c")[:20], unique("o")[:20]
    for name in (cluster, other):
        assert api.post("/api/v1/clusters", json={"name": name}).status_code == 201
    repo = unique("gops")
    envs = {"dev": {"cluster": cluster}, "prod": {"cluster": other, "after": "dev"}}
    assert api.post("/api/v1/gitops", json={"repo": repo, "environments": envs}).status_code == 201
    r = api.get(f"/api/v1/clusters/{cluster}/environments")
    assert r.status_code == 200, r.text
    assert r.json() == [{"repo": repo, "env": "dev", "branch": "env/dev", "path": "rendered"}]
    missing = api.get("/api/v1/clusters/nope/environments")
    assert missing.status_code == 404 and missing.json()["rule"] == "cluster.registered"


def test_the_config_is_the_agents_own_and_keeps_signature_checks_on_the_nodes_registry_name() -> None:
    from conveyor.agent.config import AgentConfig
    from conveyor.agent.verify import HttpSource
    from conveyor.clusters.agent_install import agent_config

    cfg = AgentConfig.model_validate(agent_config(_install()))
    registries, insecure = cfg.conveyor_registries()
    assert registries == {"127.0.0.1:8080"}  # what images name, so apps/ images there are verified
    source = HttpSource({"host.conveyor.internal:8080": "cnv_t"}, insecure, cfg.signatures.endpoints)
    try:
        url, headers = source._url("127.0.0.1:8080", "apps/web/manifests/1.0.0")
    finally:
        source.close()
    assert url == "http://host.conveyor.internal:8080/v2/apps/web/manifests/1.0.0"
    assert headers == {"Authorization": "Bearer cnv_t"}

"""Environment definitions: parsed strictly, with file/line/column in every error."""

from __future__ import annotations

import pytest

from conveyor.core import InvalidInput
from conveyor.delivery.environments import Environment, Via, parse_environment, promotion_order


def test_defaults_and_namespace_pattern() -> None:
    env = parse_environment("qa", "cluster: nonprod\nnamespace: '{app}-{env}'\nafter: dev\n"
                                  "verify: {path: /healthz, timeout: 2m}\n")
    assert env.branch == "env/qa" and env.after == "dev" and not env.auto_merge
    assert env.namespace("hello") == "hello-qa"
    assert env.verify is not None and env.verify.timeout == 120 and env.verify.expect_status == 200
    assert env.approvals.required == 0 and env.approvals.allow_author
    assert env.verify.via is None and env.verify.dependency is None  # the cluster's kind decides


def test_verify_says_how_the_endpoint_is_reached_and_which_dependency_must_answer() -> None:
    env = parse_environment("dev", "cluster: a\nverify: {path: /, via: service-proxy, dependency: counter}\n")
    assert env.verify is not None and env.verify.via is Via.SERVICE_PROXY and env.verify.dependency == "counter"
    assert parse_environment("dev", "cluster: a\nverify: {via: nodeport}\n").verify == \
        parse_environment("dev", "cluster: a\nverify: {via: nodeport}\n").verify
    with pytest.raises(InvalidInput, match="environments/dev.yaml:2:15: 'ingress' is not one of"):
        parse_environment("dev", "cluster: a\nverify: {via: ingress}\n")


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("cluster: a\nverify:\n  path: healthz\n", "environments/dev.yaml:3:9", "does not match"),
        ("cluster: a\napprovals:\n  required: -1\n", "environments/dev.yaml:3:13", "less than the minimum"),
        ("cluster: a\nclustr: b\n", "environments/dev.yaml:1:1", "Additional properties"),
        ("namespace: x\n", "environments/dev.yaml:1:1", "'cluster' is a required property"),
        ("cluster: [a\n", "environments/dev.yaml:", "invalid YAML"),
        ("cluster: a\nverify: {timeout: soon}\n", "environments/dev.yaml:2:19", "does not match"),
    ],
)
def test_bad_files_name_the_place(text: str, where: str, what: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_environment("dev", text)
    assert exc.value.detail.startswith(where), exc.value.detail
    assert what in exc.value.detail


def test_promotion_order_follows_after_links_and_refuses_cycles() -> None:
    envs = {n: Environment(name=n, cluster="c", after=a) for n, a in
            (("prod", "qa"), ("qa", "dev"), ("dev", None), ("perf", "dev"))}
    assert [e.name for e in promotion_order(envs)] == ["dev", "perf", "qa", "prod"]
    cyclic = {"a": Environment(name="a", cluster="c", after="b"), "b": Environment(name="b", cluster="c", after="a")}
    with pytest.raises(InvalidInput, match="cycle"):
        promotion_order(cyclic)

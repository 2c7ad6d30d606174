"""Rendering and application secrets (delivery/secret_refs.py, delivery/secrets.py): fast, no server."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from conveyor.core import InvalidInput, Unprocessable
from conveyor.delivery import secret_refs
from conveyor.delivery.secrets import _changes, check_names, fingerprint, fingerprints_of


def workload(name: str, kind: str = "Deployment", **pod: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "app", "image": "x"}], **pod}
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    if kind == "CronJob":
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": name},
                "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": {"template": template}}


def env_ref(secret: str, optional: bool = False) -> dict[str, Any]:
    return {"name": "X", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k", "optional": optional}}}


def dump(*objects: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=True)


def annotations(text: str) -> dict[str, dict[str, str]]:
    out = {}
    for o in yaml.safe_load_all(text):
        t = secret_refs.pod_template(o)
        if t is not None:
            out[o["metadata"]["name"]] = (t.get("metadata") or {}).get("annotations") or {}
    return out


def test_every_kind_of_reference_is_found_and_optional_ones_are_not() -> None:
    pod = {"containers": [{"name": "a", "image": "x", "env": [env_ref("a"), env_ref("opt", optional=True)],
                           "envFrom": [{"secretRef": {"name": "b"}}]}],
           "initContainers": [{"name": "i", "image": "x", "env": [env_ref("c")]}],
           "volumes": [{"name": "v", "secret": {"secretName": "d"}},
                       {"name": "p", "projected": {"sources": [{"secret": {"name": "e"}}]}}]}
    assert secret_refs.references(workload("w", **pod)) == {"a", "b", "c", "d", "e"}
    cron = workload("c", kind="CronJob", volumes=[{"name": "v", "secret": {"secretName": "f"}}])
    assert secret_refs.references(cron) == {"f"}
    assert secret_refs.references({"kind": "ConfigMap", "metadata": {"name": "x"}}) == set()


def test_a_missing_secret_fails_rendering_naming_workload_and_secret() -> None:
    text = dump(workload("web", containers=[{"name": "a", "image": "x", "env": [env_ref("db")]}]))
    with pytest.raises(Unprocessable) as info:
        secret_refs.stamp(text, {}, env="qa")
    assert info.value.rule == "render.secret-missing"
    assert "Deployment/web uses Secret 'db'" in info.value.detail and "qa" in info.value.detail
    # a Secret of the manifests themselves counts, and so does an encrypted one of the environment
    own = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}}
    assert secret_refs.stamp(dump(own, yaml.safe_load(text)), {}, env="qa")
    assert secret_refs.stamp(text, {"db": b"doc"}, env="qa")


def test_the_checksum_follows_the_documents_a_workload_uses() -> None:
    text = dump(workload("web", containers=[{"name": "a", "image": "x", "env": [env_ref("db")]}]),
                workload("other", containers=[{"name": "a", "image": "x"}]))
    first = annotations(secret_refs.stamp(text, {"db": b"v1", "unused": b"u"}, env="dev"))
    rotated = annotations(secret_refs.stamp(text, {"db": b"v2", "unused": b"u"}, env="dev"))
    assert first["web"][secret_refs.CHECKSUM_ANNOTATION] != rotated["web"][secret_refs.CHECKSUM_ANNOTATION]
    assert first["other"] == rotated["other"] == {}  # uses no secret: never rolled by one
    again = annotations(secret_refs.stamp(text, {"db": b"v1", "unused": b"other"}, env="dev"))
    assert again["web"] == first["web"]  # an unrelated secret's rotation does not roll it


def test_stamping_unchanged_manifests_is_stable() -> None:
    text = dump(workload("plain"))
    assert secret_refs.stamp(text, {}, env="dev") == text


def test_fingerprints_are_keyed_and_readable_back() -> None:
    a, b = fingerprint(b"k1", b"pw"), fingerprint(b"k2", b"pw")
    assert a != b and a.startswith("hmac-sha256:") and len(a) == len("hmac-sha256:") + 16
    doc = {"metadata": {"annotations": {"conveyor.dev/fingerprints": f"A={a}, B={b}"}}}
    assert fingerprints_of(yaml.safe_dump(doc).encode()) == {"A": a, "B": b}
    assert _changes({"A": a, "B": b, "C": a}, {"A": a, "B": a, "D": b}) == {
        "A": "unchanged", "B": "changed", "C": "removed", "D": "added"}


def test_names_and_values_are_checked() -> None:
    for name, values, rule in [("Bad_Name", {"k": b"v"}, "secret.name"), ("ok", {}, "secret.keys"),
                               ("ok", {"bad key": b"v"}, "secret.key"), ("ok", {"k": b""}, "secret.value-empty"),
                               ("ok", {"k": b"x" * (600 * 1024)}, "secret.size")]:
        with pytest.raises(InvalidInput) as info:
            check_names(name, values)
        assert info.value.rule == rule

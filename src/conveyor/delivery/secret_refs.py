"""Which Secrets an app's workloads use, whether the environment has them, and the checksum that rolls them.

Rendering for an environment refuses manifests whose pod templates use a Secret (``secretKeyRef``,
``envFrom.secretRef``, a ``secret`` or projected volume; ``optional: true`` ones excepted) that is
neither one of the manifests' own objects nor an encrypted secret of the app on the environment
branch (``rendered/secrets/<app>/``): the promotion fails naming the workload and the Secret instead
of pods that never start. Each workload that uses encrypted secrets gets a checksum of their
documents as a pod-template annotation, so setting a new value (a new document) rolls exactly the
workloads that read it; ``secrets.propose`` re-stamps the rendered manifests in the same PR.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import yaml

from conveyor.core import Unprocessable

CHECKSUM_ANNOTATION = "conveyor.dev/secret-checksum"
_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object's pod template (metadata + spec), or None for objects that run no pods."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind in _TEMPLATE_KINDS:
        return spec.get("template")
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    return None


def _pod_refs(pod: dict[str, Any]) -> Iterator[str]:
    for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                yield str(ref.get("name"))
        for e in c.get("envFrom") or []:
            ref = e.get("secretRef")
            if ref and not ref.get("optional"):
                yield str(ref.get("name"))
    for v in pod.get("volumes") or []:
        sec = v.get("secret")
        if sec and not sec.get("optional"):
            yield str(sec.get("secretName"))
        for src in (v.get("projected") or {}).get("sources") or []:
            ref = src.get("secret")
            if ref and not ref.get("optional"):
                yield str(ref.get("name"))


def references(obj: dict[str, Any]) -> set[str]:
    """Names of the Secrets the object's pods cannot start without."""
    if obj.get("kind") == "Pod":
        return set(_pod_refs(obj.get("spec") or {}))
    template = pod_template(obj)
    return set(_pod_refs(template.get("spec") or {})) if template else set()


def checksum(names: set[str], documents: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode() + b"\0" + documents[name] + b"\0")
    return h.hexdigest()[:32]


def _label(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def stamp(manifests: str, documents: dict[str, bytes], *, env: str, strict: bool = True) -> str:
    """``manifests`` with each workload's secret checksum set (or removed when it uses no encrypted
    secret); with ``strict``, Unprocessable when a workload uses a Secret the environment lacks."""
    objects = [o for o in yaml.safe_load_all(manifests) if isinstance(o, dict)]
    own = {(o.get("metadata") or {}).get("name") for o in objects if o.get("kind") == "Secret"}
    missing = []
    for obj in objects:
        refs = references(obj)
        lacking = sorted(refs - own - set(documents))
        missing += [f"{_label(obj)} uses Secret '{n}'" for n in lacking]
        template = pod_template(obj)
        if template is None:
            continue
        notes = (template.setdefault("metadata", {}) or {}).setdefault("annotations", {}) or {}
        used = refs & set(documents)
        if used:
            notes[CHECKSUM_ANNOTATION] = checksum(used, documents)
        else:
            notes.pop(CHECKSUM_ANNOTATION, None)
        template["metadata"]["annotations"] = notes
        if not notes:
            template["metadata"].pop("annotations")
    if missing and strict:
        hint = f" (set them with `conveyor env secret set APP {env} NAME`)"
        raise Unprocessable(f"secrets missing in environment {env}: " + "; ".join(missing[:10]) + hint,
                            rule="render.secret-missing")
    return yaml.safe_dump_all(objects, sort_keys=True)


def users(manifests: str | bytes | None, name: str) -> list[str]:
    """The workloads of rendered manifests that use the Secret ``name``."""
    if not manifests:
        return []
    return [_label(o) for o in yaml.safe_load_all(manifests) if isinstance(o, dict) and name in references(o)]

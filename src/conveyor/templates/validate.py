"""Schema validation of rendered objects for the Kubernetes version that will run them.

kubernetes-validate ships the OpenAPI schemas of every minor release it supports (here 1.25 to
1.37) and picks the newest schema not newer than the version asked for. Validating against the
newest schema while the clusters run 1.34 lets through fields a 1.34 API server rejects (for
example ``spec.schedulingGroup`` of a pod, added in 1.35); so callers pass the cluster's version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from conveyor.core.yamlspec import RENDERED_LIMITS, SpecError, safe_load_all
from conveyor.templates.bundle import BundleError

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def _parts(version: str) -> tuple[int, int, int]:
    m = _VERSION.match(version.strip())
    if m is None:
        raise BundleError(f"'{version}' is not a Kubernetes version (like v1.34.4)", rule="render.kubernetes-version")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def oldest_version(versions: Iterable[str]) -> str | None:
    """The oldest of some clusters' versions (empty strings, e.g. a cluster still being created, skipped)."""
    known = [v for v in versions if v and _VERSION.match(v.strip())]
    return min(known, key=_parts) if known else None


def schema_version(kubernetes_version: str) -> str:
    """The schema release kubernetes-validate uses for ``kubernetes_version`` (``v1.34.4`` -> ``1.34.4``)."""
    import kubernetes_validate as kv  # type: ignore[import-untyped]

    major, minor, patch = _parts(kubernetes_version)
    supported = [_parts(v) for v in kv.utils.all_versions()]
    if (major, minor) > supported[-1][:2] or (major, minor) < supported[0][:2]:
        have = f"{supported[0][0]}.{supported[0][1]} to {supported[-1][0]}.{supported[-1][1]}"
        raise BundleError(f"no Kubernetes schemas for {kubernetes_version} here (kubernetes-validate has {have})",
                          rule="render.kubernetes-version")
    return f"{major}.{minor}.{patch}"


@dataclass(frozen=True)
class Finding:
    """One rendered object judged: valid, invalid (with where and why), or without a schema (custom resources)."""

    name: str  # Kind/name
    valid: bool
    message: str = ""
    schemaless: bool = False


def validate(text: str, kubernetes_version: str) -> list[Finding]:
    """Every object of a YAML stream judged by the schemas of ``kubernetes_version``."""
    import kubernetes_validate as kv

    version = schema_version(kubernetes_version)
    out = []
    try:
        docs = safe_load_all(text, "rendered manifests", RENDERED_LIMITS)
    except SpecError as exc:
        return [Finding("(stream)", False, f"rendered output is not acceptable YAML: {exc}")]
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            out.append(Finding("(object)", False, "an object without kind/apiVersion"))
            continue
        out.append(_judge(kv, doc, version))
    return out


def _judge(kv: Any, doc: dict[str, Any], version: str) -> Finding:
    name = f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(root)"
        return Finding(name, False, f"invalid at {where}: {exc.message}")
    except kv.SchemaNotFoundError as exc:
        return Finding(name, True, exc.message, schemaless=True)
    return Finding(name, True)


def problems(text: str, kubernetes_version: str, *, schemaless_ok: bool = True) -> list[str]:
    """The findings that fail, one line each (empty when valid)."""
    return [f"{f.name}: {f.message}" for f in validate(text, kubernetes_version)
            if not f.valid or (f.schemaless and not schemaless_ok)]

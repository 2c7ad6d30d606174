"""Environment definitions: ``environments/<env>.yaml`` (and per-app values) on the GitOps repo's main."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from conveyor.core import InvalidInput
from conveyor.core.yamlspec import (
    VALUES_LIMITS,
    SpecError,
    decode,
    load_with_marks,
    packaged_schema,
    parse_duration,
    safe_load,
    validate,
)
from conveyor.forge.git import BareRepo

ENV_DIR = "environments"
_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Approvals:
    required: int = 0
    approver_roles: tuple[str, ...] = ()
    allow_author: bool = True


@dataclass(frozen=True)
class Verify:
    service: str | None = None
    port: int | str | None = None
    path: str = "/"
    expect_status: int = 200
    expect_body: str | None = None
    timeout: int = 120


@dataclass(frozen=True)
class Environment:
    name: str
    cluster: str
    namespace_pattern: str = "{app}-{env}"
    branch: str = ""
    after: str | None = None
    auto_merge: bool = False
    approvals: Approvals = Approvals()
    verify: Verify | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def namespace(self, app: str) -> str:
        return self.namespace_pattern.format(app=app, env=self.name)


def parse_environment(name: str, text: str | bytes) -> Environment:
    file = f"{ENV_DIR}/{name}.yaml"
    if not _ENV_NAME.match(name):
        raise InvalidInput(f"{file}: environment names are lowercase letters, digits and '-'", rule="env.name")
    try:
        data, marks = load_with_marks(text if isinstance(text, str) else decode(text, file), file)
        validate(data, marks, packaged_schema("conveyor.delivery", "environment"), file)
        timeout = parse_duration((data.get("verify") or {}).get("timeout", 120))
    except SpecError as exc:
        raise InvalidInput(str(exc), rule="env.schema") from None
    a = data.get("approvals") or {}
    v = data.get("verify")
    return Environment(
        name=name,
        cluster=data["cluster"],
        namespace_pattern=data.get("namespace", "{app}-{env}"),
        branch=data.get("branch") or f"env/{name}",
        after=data.get("after"),
        auto_merge=bool(data.get("auto_merge", False)),
        approvals=Approvals(
            required=int(a.get("required", 0)),
            approver_roles=tuple(a.get("approver_roles", ())),
            allow_author=bool(a.get("allow_author", True)),
        ),
        verify=None if v is None else Verify(
            service=v.get("service"),
            port=v.get("port"),
            path=v.get("path", "/"),
            expect_status=int(v.get("expect_status", 200)),
            expect_body=v.get("expect_body"),
            timeout=timeout,
        ),
        values=dict(data.get("values") or {}),
    )


def load_environments(git: BareRepo, rev: str) -> dict[str, Environment]:
    envs: dict[str, Environment] = {}
    for path in git.list_files(rev, ENV_DIR):
        parts = path.split("/")
        if len(parts) == 2 and parts[1].endswith(".yaml"):
            name = parts[1][: -len(".yaml")]
            envs[name] = parse_environment(name, git.read_file(rev, path) or b"")
    for env in envs.values():
        if env.after is not None and env.after not in envs:
            raise InvalidInput(f"{ENV_DIR}/{env.name}.yaml: 'after: {env.after}' names no environment",
                               rule="env.after")
    return envs


def app_values(git: BareRepo, rev: str, env: str, app: str) -> dict[str, Any]:
    raw = git.read_file(rev, f"{ENV_DIR}/{env}/{app}.yaml")
    if raw is None:
        return {}
    file = f"{ENV_DIR}/{env}/{app}.yaml"
    try:
        data = safe_load(decode(raw, file), file, VALUES_LIMITS) or {}
    except SpecError as exc:
        raise InvalidInput(str(exc), rule="env.app-values") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{ENV_DIR}/{env}/{app}.yaml must be a mapping of values", rule="env.app-values")
    return data


def promotion_order(envs: dict[str, Environment]) -> list[Environment]:
    """Environments from the first (no ``after``) to the last, following ``after`` links."""
    order: list[Environment] = []
    frontier = sorted((e for e in envs.values() if e.after is None), key=lambda e: e.name)
    seen: set[str] = set()
    while frontier:
        env = frontier.pop(0)
        if env.name in seen:
            continue
        seen.add(env.name)
        order.append(env)
        frontier += sorted((e for e in envs.values() if e.after == env.name), key=lambda e: e.name)
    if len(order) != len(envs):
        cyclic = sorted(set(envs) - seen)
        raise InvalidInput(f"environments {', '.join(cyclic)} form a cycle of 'after' links", rule="env.after")
    return order


def next_environments(envs: dict[str, Environment], after: str) -> list[Environment]:
    return sorted((e for e in envs.values() if e.after == after), key=lambda e: e.name)

"""Environment definitions: ``environments/<env>.yaml`` (and per-app values) on the GitOps repo's main."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from conveyor.core import InvalidInput
from conveyor.core.yamlspec import (
    VALUES_LIMITS,
    Marks,
    SpecError,
    decode,
    load_with_marks,
    packaged_schema,
    parse_duration,
    safe_load,
    validate,
    where,
)
from conveyor.forge import BareRepo

ENV_DIR = "environments"
_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


SENSITIVE_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Secret", "CustomResourceDefinition",
                   "NetworkPolicy", "Namespace")


@dataclass(frozen=True)
class Approvals:
    required: int = 0
    approver_roles: tuple[str, ...] = ()
    allow_author: bool = True
    expire_after: int | None = None  # seconds a promotion may wait for its approvals


@dataclass(frozen=True)
class FreezeWindow:
    """A recurring window (cron start + duration in a time zone) or a one-off one (start, end)."""

    reason: str
    name: str = ""
    cron: str | None = None
    duration: int = 0
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None

    def around(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The occurrence of this window that contains ``at``, if any."""
        if self.cron is None:
            assert self.start and self.end
            return (self.start, self.end) if self.start <= at < self.end else None
        local = at.astimezone(ZoneInfo(self.timezone))
        began = croniter(self.cron, local + timedelta(seconds=1)).get_prev(datetime)
        ends = began + timedelta(seconds=self.duration)
        return (began, ends) if began <= local < ends else None

    def next_after(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The next occurrence starting after ``at``."""
        if self.cron is None:
            assert self.start and self.end
            return (self.start, self.end) if self.start > at else None
        began = croniter(self.cron, at.astimezone(ZoneInfo(self.timezone))).get_next(datetime)
        return began, began + timedelta(seconds=self.duration)


@dataclass(frozen=True)
class Freeze:
    windows: tuple[FreezeWindow, ...] = ()
    override_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Soak:
    duration: int
    max_restarts: int = 0


@dataclass(frozen=True)
class Risk:
    extra_approvals: int = 1
    sensitive_kinds: tuple[str, ...] = SENSITIVE_KINDS
    trailer: str = "Security"


class Via(StrEnum):
    """How verification reaches the app's endpoint.

    NODEPORT is the way its users come in: the Service's NodePort on the node's address, through
    kube-proxy's rules, from outside the cluster. SERVICE_PROXY goes through the API server
    (``/api/v1/namespaces/NS/services/NAME/proxy``), which needs no route to the nodes: the way in
    for registered clusters, whose node addresses Conveyor does not know."""

    NODEPORT = "nodeport"
    SERVICE_PROXY = "service-proxy"


@dataclass(frozen=True)
class Verify:
    service: str | None = None
    port: int | str | None = None
    path: str = "/"
    expect_status: int = 200
    expect_body: str | None = None
    timeout: int = 120
    via: Via | None = None  # None: NODEPORT on local clusters, SERVICE_PROXY on registered ones
    # A field of the JSON answer in which the app reports a service it depends on: it must say "ok": true.
    dependency: str | None = None


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
    freeze: Freeze = Freeze()
    soak: Soak | None = None
    risk: Risk | None = None

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
        freeze = _freeze(data.get("freeze") or {}, marks, file)
    except SpecError as exc:
        raise InvalidInput(str(exc), rule="env.schema") from None
    a = data.get("approvals") or {}
    v = data.get("verify")
    soak, risk = data.get("soak"), data.get("risk")
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
            expire_after=duration(a["expire_after"]) if "expire_after" in a else None,
        ),
        verify=None if v is None else Verify(
            service=v.get("service"),
            port=v.get("port"),
            path=v.get("path", "/"),
            expect_status=int(v.get("expect_status", 200)),
            expect_body=v.get("expect_body"),
            timeout=timeout,
            via=Via(v["via"]) if "via" in v else None,
            dependency=v.get("dependency"),
        ),
        values=dict(data.get("values") or {}),
        freeze=freeze,
        soak=None if soak is None else Soak(duration(soak["duration"]), int(soak.get("max_restarts", 0))),
        risk=None if risk is None else Risk(
            extra_approvals=int(risk.get("extra_approvals", 1)),
            sensitive_kinds=tuple(risk.get("sensitive_kinds", SENSITIVE_KINDS)),
            trailer=str(risk.get("trailer", "Security"))),
    )


def duration(value: int | str) -> int:
    """Seconds from 90, '90s', '5m', '1h' or '3d' (the schema has checked the form)."""
    if isinstance(value, str) and value.endswith("d"):
        return int(value[:-1]) * 86400
    return parse_duration(value)


def _instant(value: Any, marks: Marks, path: tuple[str | int, ...], file: str) -> datetime:
    try:
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise SpecError(file, *where(marks, path), f"'{value}' is not an ISO 8601 date-time") from None
    if at.tzinfo is None:
        raise SpecError(file, *where(marks, path), f"'{value}' needs a time zone (Z or +01:00)")
    return at


def _freeze(data: dict[str, Any], marks: Marks, file: str) -> Freeze:
    """The freeze windows, with what the schema cannot check: cron syntax, time zones, from < to."""
    windows = []
    for i, w in enumerate(data.get("windows") or []):
        at: tuple[str | int, ...] = ("freeze", "windows", i)
        if "cron" in w:
            if not croniter.is_valid(w["cron"]) or len(w["cron"].split()) != 5:
                raise SpecError(file, *where(marks, (*at, "cron")), f"{w['cron']!r} is not a 5-field cron expression")
            try:
                ZoneInfo(w.get("timezone", "UTC"))
            except (ZoneInfoNotFoundError, ValueError):
                raise SpecError(file, *where(marks, (*at, "timezone")),
                                f"unknown time zone {w.get('timezone')!r}") from None
            windows.append(FreezeWindow(reason=w["reason"], name=w.get("name", ""), cron=w["cron"],
                                        duration=duration(w["duration"]), timezone=w.get("timezone", "UTC")))
            continue
        start = _instant(w["from"], marks, (*at, "from"), file)
        end = _instant(w["to"], marks, (*at, "to"), file)
        if end <= start:
            raise SpecError(file, *where(marks, (*at, "to")), "'to' must be after 'from'")
        windows.append(FreezeWindow(reason=w["reason"], name=w.get("name", ""), start=start, end=end))
    return Freeze(tuple(windows), tuple(data.get("override_roles", ())))


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

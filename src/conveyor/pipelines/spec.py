"""``.conveyor/pipeline.yaml`` and ``.conveyor/app.yaml``: parsing, schema validation, expansion.

Errors name the file, line and column (1-based) of the offending node, e.g.
``.conveyor/pipeline.yaml:7:11: 'dockerfile-lnt' is not one of [...]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import jsonschema

from conveyor.core.yamlspec import (
    Marks,
    decode,
    load_with_marks,
    packaged_schema,
    parse_duration,
    validate,
    where,
)
from conveyor.core.yamlspec import (
    SpecError as SpecError,  # re-exported: the pipeline's own error type
)

PIPELINE_FILE = ".conveyor/pipeline.yaml"
APP_FILE = ".conveyor/app.yaml"
PIPELINES = ("pr", "ci")
DEFAULT_TIMEOUT = 1800



def schema(name: str) -> dict[str, Any]:
    """The published JSON Schema ``pipeline`` or ``app``."""
    return packaged_schema("conveyor.pipelines", name)


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator == "oneOf" and isinstance(err.instance, dict):
        kinds = [k for k in ("run", "uses", "include") if k in err.instance]
        if not kinds:
            return "a step needs exactly one of 'run', 'uses' or 'include'"
        if len(kinds) > 1:
            return f"a step cannot have both {' and '.join(repr(k) for k in kinds)}"
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        sch = err.schema if isinstance(err.schema, dict) else {}
        allowed = set((sch.get("properties") or {}).keys())
        extra = sorted(set(err.instance) - allowed)
        return f"unknown key(s) {', '.join(repr(e) for e in extra)}; allowed: {', '.join(sorted(allowed))}"
    if err.validator == "not" and isinstance(err.instance, dict):
        if "uses" in err.instance:
            return "'image' and 'working_directory' apply to 'run' steps, not to built-in tasks"
        if "run" in err.instance:
            return "'with' applies to built-in tasks ('uses'), not to 'run' steps"
    if err.validator == "enum" and err.path and err.path[-1] == "uses":
        tasks = schema("pipeline")["$defs"]["item"]["properties"]["uses"]["enum"]
        return f"unknown task {err.instance!r}; built-in tasks: {', '.join(tasks)}"
    return str(err.message)


def _validate(data: Any, marks: Marks, name: str, file: str) -> None:
    validate(data, marks, schema(name), file, _message)


@dataclass(frozen=True)
class StepSpec:
    name: str
    kind: str  # run | uses
    script: str = ""
    task: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    image: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: int = DEFAULT_TIMEOUT
    working_directory: str = "."
    needs: tuple[str, ...] = ()
    host: bool = False  # run on the runner's host: only where an administrator allows it (never for pr)
    resources: dict[str, dict[str, str]] = field(default_factory=dict)  # requests/limits: cpu, memory

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "needs": list(self.needs)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepSpec:
        return cls(**{**data, "needs": tuple(data.get("needs") or ())})


class Trigger(StrEnum):
    EACH_COMMIT = "each-commit"
    BATCH = "batch"  # merges are collected; one run builds the tip (batch window and/or schedule)


@dataclass(frozen=True)
class PipelineSpec:
    """One pipeline: its steps and where and when it runs."""

    steps: list[StepSpec]
    runs_on: tuple[str, ...] = ()
    trigger: Trigger = Trigger.EACH_COMMIT
    batch_window: int | None = None  # seconds after the first collected merge
    schedule: str | None = None  # cron (5 fields)
    timezone: str = "UTC"

    @property
    def parallel(self) -> bool:
        """Steps form a DAG when any declares ``needs``; otherwise they run one after another."""
        return any(s.needs for s in self.steps)


@dataclass(frozen=True)
class AppSpec:
    name: str
    version: str
    image: str
    dockerfile: str = "Dockerfile"
    context: str = "."
    templates_path: str | None = None
    templates_kind: str | None = None
    test_values: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "image": self.image, "dockerfile": self.dockerfile,
            "context": self.context, "templates_path": self.templates_path, "templates_kind": self.templates_kind,
            "test_values": self.test_values,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AppSpec:
        return cls(**data)


def _step(item: dict[str, Any]) -> StepSpec:
    env = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (item.get("env") or {}).items()}
    timeout = parse_duration(item["timeout"]) if "timeout" in item else DEFAULT_TIMEOUT
    needs = tuple(item.get("needs") or ())
    resources = {k: {r: str(v) for r, v in (item.get("resources") or {}).get(k, {}).items()}
                 for k in ("requests", "limits") if k in (item.get("resources") or {})}
    if "run" in item:
        script: str = item["run"]
        first = script.strip().splitlines()[0] if script.strip() else "run"
        return StepSpec(name=item.get("name") or first[:80], kind="run", script=script, image=item.get("image"),
                        env=env, timeout=timeout, working_directory=item.get("working_directory", "."),
                        needs=needs, host=bool(item.get("host", False)), resources=resources)
    return StepSpec(name=item.get("name") or item["uses"], kind="uses", task=item["uses"],
                    params=dict(item.get("with") or {}), env=env, timeout=timeout, needs=needs, resources=resources)


def _check_needs(steps: list[StepSpec], items: list[tuple[tuple[str | int, ...], dict[str, Any]]], marks: Marks,
                 file: str) -> None:
    """Unique names when steps name each other, known names, no cycles: file:line:col on the offender."""
    if not any(s.needs for s in steps):
        return
    seen: dict[str, int] = {}
    for i, s in enumerate(steps):
        if s.name in seen:
            line, col = where(marks, (*items[i][0], "name"))
            raise SpecError(file, line, col, f"two steps are named '{s.name}'; steps that `needs` refers to "
                                             "must have unique names")
        seen[s.name] = i
    for i, s in enumerate(steps):
        for n in s.needs:
            if n not in seen:
                line, col = where(marks, (*items[i][0], "needs"))
                raise SpecError(file, line, col, f"'{s.name}' needs '{n}', which is not a step of this pipeline")
    state: dict[str, int] = {}

    def visit(name: str, i: int) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            line, col = where(marks, (*items[i][0], "needs"))
            raise SpecError(file, line, col, f"the needs of '{name}' form a cycle")
        state[name] = 1
        for n in steps[seen[name]].needs:
            visit(n, seen[name])
        state[name] = 2

    for i, s in enumerate(steps):
        visit(s.name, i)


def _items(data: dict[str, Any], pipeline: str) -> tuple[tuple[str | int, ...], list[Any]]:
    """The path of a pipeline's step list and the list (a pipeline is a list, or a mapping with steps)."""
    value = data.get(pipeline)
    if isinstance(value, dict):
        return (pipeline, "steps"), list(value.get("steps") or [])
    return (pipeline,), list(value or [])


def _options(data: dict[str, Any], pipeline: str, marks: Marks, file: str) -> dict[str, Any]:
    value = data.get(pipeline)
    if not isinstance(value, dict):
        return {}
    opts: dict[str, Any] = {"runs_on": tuple(value.get("runs-on") or ())}
    if "trigger" in value:
        opts["trigger"] = Trigger(value["trigger"])
    batch = value.get("batch") or {}
    if "window" in batch:
        opts["batch_window"] = parse_duration(batch["window"])
    schedule = value.get("schedule") or {}
    if schedule:
        from conveyor.pipelines.cadence import check_cron

        problem = check_cron(str(schedule["cron"]), str(schedule.get("timezone", "UTC")))
        if problem:
            line, col = where(marks, (pipeline, "schedule"))
            raise SpecError(file, line, col, problem)
        opts["schedule"] = str(schedule["cron"])
        opts["timezone"] = str(schedule.get("timezone", "UTC"))
    if opts.get("trigger") == Trigger.BATCH and "batch_window" not in opts and "schedule" not in opts:
        line, col = where(marks, (pipeline, "trigger"))
        raise SpecError(file, line, col, "trigger: batch needs batch: {window: ...} or a schedule")
    if pipeline == "pr" and (opts.get("trigger") == Trigger.BATCH or "schedule" in opts):
        line, col = where(marks, (pipeline,))
        raise SpecError(file, line, col, "only the ci pipeline can run at a cadence")
    return opts


def parse_pipeline(text: str, file: str = PIPELINE_FILE) -> dict[str, PipelineSpec]:
    """Both pipelines, validated, with ``include: pr`` expanded."""
    data, marks = load_with_marks(text, file)
    _validate(data, marks, "pipeline", file)
    out: dict[str, PipelineSpec] = {}
    for pipeline in PIPELINES:
        base, raw = _items(data, pipeline)
        steps: list[StepSpec] = []
        located: list[tuple[tuple[str | int, ...], dict[str, Any]]] = []
        for i, item in enumerate(raw):
            if "include" in item:
                if pipeline != "ci":
                    line, col = where(marks, (*base, i, "include"))
                    raise SpecError(file, line, col, "only the ci pipeline can include pr")
                if "pr" not in data:
                    line, col = where(marks, (*base, i, "include"))
                    raise SpecError(file, line, col, "include: pr, but there is no pr pipeline")
                pr_base, pr_raw = _items(data, "pr")
                steps.extend(_step(s) for s in pr_raw)
                located.extend(((*pr_base, j), s) for j, s in enumerate(pr_raw))
            else:
                steps.append(_step(item))
                located.append(((*base, i), item))
        if steps:
            _check_needs(steps, located, marks, file)
            out[pipeline] = PipelineSpec(steps=steps, **_options(data, pipeline, marks, file))
    return out


def parse_app(text: str, file: str = APP_FILE) -> AppSpec:
    data, marks = load_with_marks(text, file)
    _validate(data, marks, "app", file)
    templates = data.get("templates") or {}
    return AppSpec(
        name=data["name"], version=str(data["version"]), image=data["image"],
        dockerfile=data.get("dockerfile", "Dockerfile"), context=data.get("context", "."),
        templates_path=templates.get("path"), templates_kind=templates.get("kind"),
        test_values=data.get("test_values"),
    )


def load_workspace(root: Path) -> tuple[dict[str, PipelineSpec], AppSpec | None]:
    """Read both files from a checkout; app.yaml is optional for pipelines that use no task."""
    pipeline_path = root / PIPELINE_FILE
    if not pipeline_path.is_file():
        raise SpecError(PIPELINE_FILE, 1, 1, "the file does not exist at this commit")
    pipelines = parse_pipeline(decode(pipeline_path.read_bytes(), PIPELINE_FILE))
    app_path = root / APP_FILE
    app = parse_app(decode(app_path.read_bytes(), APP_FILE)) if app_path.is_file() else None
    if app is None and any(s.kind == "uses" for p in pipelines.values() for s in p.steps):
        raise SpecError(APP_FILE, 1, 1, "built-in tasks need .conveyor/app.yaml (name, version, image)")
    return pipelines, app

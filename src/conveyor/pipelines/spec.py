"""``.conveyor/pipeline.yaml`` and ``.conveyor/app.yaml``: parsing, schema validation, expansion.

Errors name the file, line and column (1-based) of the offending node, e.g.
``.conveyor/pipeline.yaml:7:11: 'dockerfile-lnt' is not one of [...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    if "run" in item:
        script: str = item["run"]
        first = script.strip().splitlines()[0] if script.strip() else "run"
        return StepSpec(name=item.get("name") or first[:80], kind="run", script=script, image=item.get("image"),
                        env=env, timeout=timeout, working_directory=item.get("working_directory", "."))
    return StepSpec(name=item.get("name") or item["uses"], kind="uses", task=item["uses"],
                    params=dict(item.get("with") or {}), env=env, timeout=timeout)


def parse_pipeline(text: str, file: str = PIPELINE_FILE) -> dict[str, list[StepSpec]]:
    """Both pipelines, validated, with ``include: pr`` expanded."""
    data, marks = load_with_marks(text, file)
    _validate(data, marks, "pipeline", file)
    out: dict[str, list[StepSpec]] = {}
    for pipeline in PIPELINES:
        steps: list[StepSpec] = []
        for i, item in enumerate(data.get(pipeline) or []):
            if "include" in item:
                if pipeline != "ci":
                    line, col = where(marks, (pipeline, i, "include"))
                    raise SpecError(file, line, col, "only the ci pipeline can include pr")
                if "pr" not in data:
                    line, col = where(marks, (pipeline, i, "include"))
                    raise SpecError(file, line, col, "include: pr, but there is no pr pipeline")
                steps.extend(_step(s) for s in data["pr"])
            else:
                steps.append(_step(item))
        if steps:
            out[pipeline] = steps
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


def load_workspace(root: Path) -> tuple[dict[str, list[StepSpec]], AppSpec | None]:
    """Read both files from a checkout; app.yaml is optional for pipelines that use no task."""
    pipeline_path = root / PIPELINE_FILE
    if not pipeline_path.is_file():
        raise SpecError(PIPELINE_FILE, 1, 1, "the file does not exist at this commit")
    pipelines = parse_pipeline(decode(pipeline_path.read_bytes(), PIPELINE_FILE))
    app_path = root / APP_FILE
    app = parse_app(decode(app_path.read_bytes(), APP_FILE)) if app_path.is_file() else None
    if app is None and any(s.kind == "uses" for steps in pipelines.values() for s in steps):
        raise SpecError(APP_FILE, 1, 1, "built-in tasks need .conveyor/app.yaml (name, version, image)")
    return pipelines, app

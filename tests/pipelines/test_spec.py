"""The pipeline and app files: schema errors with file, line and column; include expansion."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from conveyor.pipelines.spec import SpecError, load_workspace, parse_app, parse_pipeline, schema

GOOD = """\
pr:
  - name: unit
    run: python3 -m unittest
    env: {A: 1, B: true}
    timeout: 2m
  - uses: dockerfile-lint
    with: {failure_threshold: error}
ci:
  - include: pr
  - uses: image-build
    with: {push: true}
"""


def test_include_expands_pr_into_ci_and_normalises_steps() -> None:
    p = parse_pipeline(GOOD)
    assert [s.name for s in p["pr"].steps] == ["unit", "dockerfile-lint"]
    assert [s.name for s in p["ci"].steps] == ["unit", "dockerfile-lint", "image-build"]
    unit = p["ci"].steps[0]
    assert unit.kind == "run" and unit.timeout == 120 and unit.env == {"A": "1", "B": "true"}
    assert p["ci"].steps[2].params == {"push": True}
    assert not p["ci"].parallel and p["ci"].runs_on == ()


DAG = """\
pr:
  steps:
    - {name: lint, run: echo lint}
    - {name: unit, run: echo unit}
    - {name: build, uses: image-build, needs: [lint]}
    - {name: smoke, run: echo smoke, needs: [build, unit]}
ci:
  runs-on: [linux, big]
  trigger: batch
  batch: {window: 10m}
  steps:
    - include: pr
    - {name: publish, uses: publish-templates, needs: [smoke]}
"""


def test_needs_make_a_dag_and_pipelines_may_say_where_and_when_they_run() -> None:
    p = parse_pipeline(DAG)
    assert p["pr"].parallel and [s.needs for s in p["pr"].steps] == [(), (), ("lint",), ("build", "unit")]
    ci = p["ci"]
    assert [s.name for s in ci.steps] == ["lint", "unit", "build", "smoke", "publish"]
    assert ci.runs_on == ("linux", "big") and ci.trigger == "batch" and ci.batch_window == 600


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("pr:\n  - run: echo\n  - uses: dockerfile-lnt\n", 3, 11, "unknown task 'dockerfile-lnt'"),
        ("pr:\n  - run: echo\n    uses: image-build\n", 2, 5, "cannot have both 'run' and 'uses'"),
        ("pr:\n  - name: nothing\n", 2, 5, "exactly one of 'run', 'uses' or 'include'"),
        ("pr:\n  - uses: image-test\n    with:\n      cmd: x\n", 4, 7, "unknown key(s) 'cmd'"),
        ("pr:\n  - run: echo\n    timeout: soon\n", 3, 14, "does not match"),
        ("pr:\n  - run: echo\n  - include: pr\n", 3, 14, "only the ci pipeline can include pr"),
        ("ci:\n  - include: pr\n", 2, 14, "there is no pr pipeline"),
        ("pr:\n  - run: [unclosed\n", 3, 1, "invalid YAML"),
        ("deploy:\n  - run: echo\n", 1, 1, "unknown key(s) 'deploy'"),
        ("pr:\n  - run: a\n    run: b\n", 3, 5, "duplicate key 'run'"),
        ("pr:\n  - {name: a, run: x, needs: [b]}\n", 2, 30, "needs 'b', which is not a step"),
        ("pr:\n  - {name: a, run: x, needs: [b]}\n  - {name: b, run: x, needs: [a]}\n", 3, 30, "form a cycle"),
        ("pr:\n  - {name: a, run: x}\n  - {name: a, run: y, needs: [a]}\n", 3, 12, "two steps are named 'a'"),
        ("ci:\n  trigger: batch\n  steps: [{run: x}]\n", 2, 12, "needs batch: {window: ...} or a schedule"),
        ("ci:\n  schedule: {cron: 'every day'}\n  steps: [{run: x}]\n", 2, 13, "must have 5 fields"),
        ("ci:\n  schedule: {cron: '0 * * * *', timezone: Mars/Olympus}\n  steps: [{run: x}]\n", 2, 13,
         "unknown time zone"),
        ("pr:\n  - uses: dockerfile-lint\n    host: true\n", 2, 5, ""),
    ],
)
def test_errors_name_file_line_and_column(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_pipeline(text)
    assert (e.value.file, e.value.line, e.value.column) == (".conveyor/pipeline.yaml", line, column), str(e.value)
    assert fragment in e.value.message
    assert str(e.value).startswith(f".conveyor/pipeline.yaml:{line}:{column}: ")


def test_app_file_is_validated() -> None:
    with pytest.raises(SpecError) as e:
        parse_app("name: hello\nversion: '1'\nimage: apps/hello\ntemplates: {path: chart, kind: jsonnet}\n")
    assert e.value.line == 4 and "jsonnet" in e.value.message
    app = parse_app("name: hello\nversion: '1.0'\nimage: apps/hello\ntemplates: {path: chart, kind: helm}\n")
    assert (app.templates_path, app.templates_kind, app.dockerfile) == ("chart", "helm", "Dockerfile")


def test_tasks_need_the_app_file(tmp_path: Path) -> None:
    (tmp_path / ".conveyor").mkdir()
    (tmp_path / ".conveyor/pipeline.yaml").write_text("pr:\n  - uses: dockerfile-lint\n")
    with pytest.raises(SpecError) as e:
        load_workspace(tmp_path)
    assert e.value.file == ".conveyor/app.yaml"


def test_published_schemas_are_valid_json_schemas_and_accept_the_sample_app() -> None:
    import yaml

    root = Path(__file__).resolve().parents[2] / "examples" / "hello" / ".conveyor"
    for name, file in (("pipeline", "pipeline.yaml"), ("app", "app.yaml")):
        jsonschema.Draft202012Validator.check_schema(schema(name))
        jsonschema.validate(yaml.safe_load((root / file).read_text()), schema(name))
    assert json.dumps(schema("pipeline"))  # serialisable as served

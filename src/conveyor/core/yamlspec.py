"""YAML files checked against a JSON Schema, with errors that name file, line and column.

Used for every file a user writes for Conveyor (pipelines, app identity, environments), e.g.
``.conveyor/pipeline.yaml:7:11: 'dockerfile-lnt' is not one of [...]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

Path_ = tuple[str | int, ...]
Marks = dict[Path_, tuple[int, int]]


class SpecError(Exception):
    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{file}:{line}:{column}: {message}")
        self.file, self.line, self.column, self.message = file, line, column, message


@cache
def packaged_schema(package: str, name: str) -> dict[str, Any]:
    """The JSON Schema ``schemas/<name>.schema.json`` shipped in ``package``."""
    text = resources.files(package).joinpath("schemas").joinpath(f"{name}.schema.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def load_with_marks(text: str, file: str) -> tuple[Any, Marks]:
    """YAML to plain data plus the (line, column) of every node, keyed by its path."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SpecError(file, line, col, f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(file, 1, 1, f"invalid YAML: {exc}") from None
    if node is None:
        raise SpecError(file, 1, 1, "the file is empty")
    marks: Marks = {}

    def walk(n: yaml.Node, path: Path_) -> Any:
        marks[path] = (n.start_mark.line + 1, n.start_mark.column + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode):
                    raise SpecError(file, k.start_mark.line + 1, k.start_mark.column + 1, "keys must be strings")
                key = str(k.value)
                if key in out:
                    raise SpecError(file, k.start_mark.line + 1, k.start_mark.column + 1, f"duplicate key '{key}'")
                out[key] = walk(v, (*path, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, (*path, i)) for i, v in enumerate(n.value)]
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_object(n, deep=True)
        finally:
            loader.dispose()

    return walk(node, ()), marks


def where(marks: Marks, path: Path_) -> tuple[int, int]:
    p = tuple(path)
    while p not in marks and p:
        p = p[:-1]
    return marks.get(p, (1, 1))


def validate(
    data: Any,
    marks: Marks,
    schema: dict[str, Any],
    file: str,
    message: Callable[[jsonschema.ValidationError], str] | None = None,
) -> None:
    """Raise SpecError at the position of the most relevant schema violation, if any."""
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if not errors:
        return
    err = jsonschema.exceptions.best_match(errors)
    # best_match prefers the shallowest error; for a oneOf, descend to the real cause.
    while err.validator == "oneOf" and err.context:
        # Branches of another type than the value (a step list where a mapping was possible) say
        # nothing useful: the cause lies in the branch of the value's own type.
        relevant = [e for e in err.context if e.validator not in ("required", "not")
                    and not (e.validator == "type" and not e.relative_path)]
        if not relevant:
            break
        err = jsonschema.exceptions.best_match(relevant)
    line, col = where(marks, tuple(err.absolute_path))
    raise SpecError(file, line, col, message(err) if message else str(err.message))


def parse_duration(value: int | str) -> int:
    """Seconds from ``90``, ``"90s"``, ``"5m"`` or ``"1h"``."""
    if isinstance(value, int):
        return value
    v = value.strip()
    units = {"s": 1, "m": 60, "h": 3600}
    if v and v[-1] in units and v[:-1].isdigit():
        return int(v[:-1]) * units[v[-1]]
    if v.isdigit():
        return int(v)
    raise ValueError(f"not a duration: {value!r} (use e.g. 90, '90s', '5m', '1h')")

"""YAML files checked against a JSON Schema, with errors that name file, line and column.

Used for every file a user writes for Conveyor (pipelines, app identity, environments), e.g.
``.conveyor/pipeline.yaml:7:11: 'dockerfile-lnt' is not one of [...]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Limits:
    """What one YAML document a user gives may cost before it is refused.

    Measured before these limits (issue 13): a pipeline.yaml of a few hundred bytes of nested
    aliases ("billion laughs") kept the server busy ~20 s and left it at 1.3 GB, because every
    consumer of the parsed data (positions, schema validation, JSON) walks the aliases expanded.
    The composed node graph is measured *with aliases expanded but memoised per node*, so the
    check is linear in the file's size and a bomb is refused in about a millisecond.
    """

    max_bytes: int = 256 * 1024
    max_depth: int = 64
    max_nodes: int = 100_000  # nodes after alias expansion


SPEC_LIMITS = Limits()
# Helm values, environment values and rendered manifests (CRDs make those large).
VALUES_LIMITS = Limits(max_bytes=4 * 1024 * 1024, max_depth=100, max_nodes=1_000_000)
RENDERED_LIMITS = Limits(max_bytes=32 * 1024 * 1024, max_depth=100, max_nodes=4_000_000)


def decode(data: bytes, file: str) -> str:
    """UTF-8 text, or a SpecError at the line and column of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError(file, line, col, f"not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def _at(file: str, mark: Any, message: str) -> SpecError:
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return SpecError(file, line, col, message)


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a nesting limit while composing; records every alias use."""

    def __init__(self, text: str, file: str, limits: Limits) -> None:
        super().__init__(text)
        self.file, self.limits = file, limits
        self.depth = 0
        self.aliases: list[tuple[Any, yaml.Node]] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if node is not None:
                self.aliases.append((mark, node))
            return node
        self.depth += 1
        try:
            if self.depth > self.limits.max_depth:
                raise _at(self.file, mark, f"nested deeper than {self.limits.max_depth} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _children(n: yaml.Node) -> list[yaml.Node]:
    if isinstance(n, yaml.MappingNode):
        return [x for kv in n.value for x in kv]
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    return []


def _check_expansion(root: yaml.Node, loader: _LimitedLoader) -> None:
    """Refuse recursive aliases, and documents whose alias-expanded size or depth is too large."""
    limits, cap = loader.limits, loader.limits.max_nodes + 1
    measured: dict[int, tuple[int, int]] = {}  # node -> (expanded size capped at cap, height)
    open_: set[int] = set()

    def measure(n: yaml.Node, level: int) -> int:
        key = id(n)
        if key in open_:
            raise _at(loader.file, n.start_mark, "an alias refers to the node that contains it")
        if key not in measured:
            if level > limits.max_depth:
                raise _at(loader.file, n.start_mark, f"nested deeper than {limits.max_depth} levels")
            open_.add(key)
            total, height = 1, 0
            for c in _children(n):
                total = min(cap, total + measure(c, level + 1))
                height = max(height, measured[id(c)][1])
            open_.discard(key)
            measured[key] = (total, height + 1)
        total, height = measured[key]
        if level + height - 1 > limits.max_depth:
            raise _at(loader.file, n.start_mark, f"nested deeper than {limits.max_depth} levels (through aliases)")
        return total

    def sizes_get(n: yaml.Node) -> int:
        return measured.get(id(n), (0, 0))[0]

    if measure(root, 1) < cap:
        return
    mark, target = max(loader.aliases, key=lambda a: sizes_get(a[1]), default=(root.start_mark, root))
    alone = sizes_get(target)
    raise _at(loader.file, mark, f"aliases expand to more than {limits.max_nodes} nodes"
              + (f" (the alias here alone to {alone})" if alone < cap else " (the alias here alone does)")
              + "; refused")


def _compose_all(text: str, file: str, limits: Limits) -> list[yaml.Node]:
    if len(text) > limits.max_bytes or len(text.encode("utf-8", "surrogatepass")) > limits.max_bytes:
        raise SpecError(file, 1, 1, f"the file is larger than {limits.max_bytes} bytes")
    loader = _LimitedLoader(text, file, limits)
    try:
        docs: list[yaml.Node] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                _check_expansion(node, loader)
                docs.append(node)
        return docs
    except yaml.MarkedYAMLError as exc:
        raise _at(file, exc.problem_mark or exc.context_mark, f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(file, 1, 1, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _construct(node: yaml.Node, file: str) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise _at(file, exc.problem_mark or exc.context_mark, f"invalid YAML: {exc.problem}") from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise _at(file, node.start_mark, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def safe_load(text: str, file: str, limits: Limits = VALUES_LIMITS) -> Any:
    """One YAML document as plain data (None when empty), within ``limits`` or a SpecError."""
    docs = _compose_all(text, file, limits)
    if len(docs) > 1:
        raise _at(file, docs[1].start_mark, "expected one YAML document, found several")
    return _construct(docs[0], file) if docs else None


def safe_load_all(text: str, file: str, limits: Limits = RENDERED_LIMITS) -> list[Any]:
    """Every document of a YAML stream as plain data, within ``limits`` or a SpecError."""
    return [_construct(n, file) for n in _compose_all(text, file, limits)]


def load_with_marks(text: str, file: str, limits: Limits = SPEC_LIMITS) -> tuple[Any, Marks]:
    """YAML to plain data plus the (line, column) of every node, keyed by its path."""
    docs = _compose_all(text, file, limits)
    if not docs:
        raise SpecError(file, 1, 1, "the file is empty")
    if len(docs) > 1:
        raise _at(file, docs[1].start_mark, "expected one YAML document, found several")
    node = docs[0]
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
        return _construct(n, file)

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

"""Every YAML document a user gives is parsed within limits (issue 13), fast, with file:line:col."""

from __future__ import annotations

import time

import pytest

from conveyor.core.errors import InvalidInput
from conveyor.core.yamlspec import SPEC_LIMITS, Limits, SpecError, decode, load_with_marks, safe_load, safe_load_all
from conveyor.delivery.environments import parse_environment
from tests.support.bad_input import alias_bomb


@pytest.mark.parametrize("load", [load_with_marks, safe_load, safe_load_all])
def test_an_alias_bomb_is_refused_at_the_alias(load: object) -> None:
    started = time.perf_counter()
    with pytest.raises(SpecError, match=r"^f\.yaml:\d+:\d+: aliases expand to more than") as err:
        load(alias_bomb(), "f.yaml")  # type: ignore[operator]
    assert err.value.line >= 7  # at an alias use, not 1:1
    assert time.perf_counter() - started < 5  # not a timing test: the old code never returned


def test_modest_reuse_of_aliases_is_fine() -> None:
    text = "base: &b {cpu: 1, mem: 2}\nenvs:\n  dev: *b\n  qa: *b\n"
    data, _ = load_with_marks(text, "v.yaml")
    assert data["envs"]["dev"] == data["envs"]["qa"] == {"cpu": 1, "mem": 2}


@pytest.mark.parametrize(("text", "where", "fragment"), [
    ("a: &a [x, *a]\n", (1, 4), "refers to the node that contains it"),
    ("a: " + "[" * 70 + "]" * 70 + "\n", (1, 67), "nested deeper than 64"),
    ("".join(f"a{i}: &a{i} [*a{i - 1}]\n" if i else "a0: &a0 [x]\n" for i in range(80)), (62, 6), "through aliases"),
    ("a: 1\n---\nb: 2\n", (3, 1), "found several"),
    ("a: !!python/name:os.system\n", (1, 4), "could not determine a constructor"),
    ("a: [1,\n  b\n", (3, 1), "invalid YAML"),
])
def test_refusals_name_line_and_column(text: str, where: tuple[int, int], fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        load_with_marks(text, "f.yaml")
    assert (err.value.line, err.value.column) == where and fragment in err.value.message, str(err.value)


def test_size_limit() -> None:
    with pytest.raises(SpecError, match="larger than"):
        load_with_marks("a: " + "x" * SPEC_LIMITS.max_bytes, "f.yaml")
    with pytest.raises(SpecError, match="larger than 10 bytes"):
        safe_load("a: 1234567890", "f.yaml", Limits(max_bytes=10))


def test_invalid_utf8_names_its_position() -> None:
    with pytest.raises(SpecError, match=r"^f\.yaml:2:9: not UTF-8 text \(byte 0xff\)$"):
        decode(b"a: 1\nb: [1, 2\xff]\n", "f.yaml")
    assert decode("b: é\n".encode(), "f.yaml") == "b: é\n"


def test_environment_files_are_limited_too() -> None:
    with pytest.raises(InvalidInput, match=r"environments/dev\.yaml:\d+:\d+: aliases expand") as err:
        parse_environment("dev", alias_bomb(key="values"))
    assert err.value.rule == "env.schema"
    with pytest.raises(InvalidInput, match=r"environments/dev\.yaml:1:10: not UTF-8"):
        parse_environment("dev", b"cluster: \xff")

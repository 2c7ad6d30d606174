"""Every command, option and argument of the `conveyor` CLI explains itself, and flags show no type.

The test walks the whole command tree typer builds (no server needed): a command without a help
line, or an option or argument without one, is listed by its full path so the failure says what to
write. Rendering each command's help (typer's rich help) checks that flags carry no ``<bool>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer.main
from typer.testing import CliRunner

from conveyor.cli.main import app


def _walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
        if not sub.hidden:
            yield from _walk(sub, (*path, name))


def _tree() -> list[tuple[tuple[str, ...], Any]]:
    return list(_walk(typer.main.get_command(app), ()))


def test_every_command_option_and_argument_has_help() -> None:
    missing: list[str] = []
    for path, cmd in _tree():
        where = " ".join(("conveyor", *path))
        if not (cmd.help or cmd.short_help or "").strip():
            missing.append(f"{where}: command")
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{where}: {param.param_type_name} {param.opts[-1] if param.opts else param.name}")
    assert not missing, f"{len(missing)} without a help line:\n" + "\n".join(missing)


def test_help_shows_no_bool_type() -> None:
    runner = CliRunner()
    shown: list[str] = []
    for path, _cmd in _tree():
        result = runner.invoke(app, [*path, "--help"], terminal_width=200, env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        if "<bool>" in result.output:
            shown.append(" ".join(("conveyor", *path)))
    assert not shown, "flags shown with a <bool> type in:\n" + "\n".join(shown)

"""A shim over typer's rich help: flags show no ``<bool>`` type.

typer's plain help already leaves the type out for flags (``--yes`` takes no value), but its rich
help prints ``<bool>`` next to every flag, ``--help`` included, which reads as if the flag wanted
one. typer has no setting for it, so the one method that names the type column is wrapped here;
importing this module (the CLI entry point does) is enough.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_type_column = TyperOption.display_type_rich


def _display_type_rich(self: TyperOption, ctx: Any) -> str | None:
    """The type column of an option: nothing for a flag, typer's own text otherwise."""
    if self.is_flag and not self.count:
        return None
    return _type_column(self, ctx)


TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]

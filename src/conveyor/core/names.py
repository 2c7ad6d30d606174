"""Validation of user-supplied names that end up in paths, refs and URLs."""

from __future__ import annotations

import re

from conveyor.core.errors import InvalidInput

_USER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def validate_user_name(name: str) -> str:
    if not _USER.match(name):
        raise InvalidInput(
            f"invalid user name '{name}': use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            rule="name.user",
        )
    return name

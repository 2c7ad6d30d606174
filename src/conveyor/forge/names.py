"""Repository and branch names: validated before they reach a path, a ref or a URL."""

from __future__ import annotations

import re
import subprocess

from conveyor.core.errors import InvalidInput

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_BRANCH_CHARS = re.compile(r"^[A-Za-z0-9._/+-]{1,200}$")


def validate_repo_name(name: str) -> str:
    if not _REPO.match(name) or ".." in name or name.endswith(".git") or name.endswith(".lock"):
        raise InvalidInput(
            f"invalid repository name '{name}': use up to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..' and not ending in '.git'",
            rule="name.repo",
        )
    return name


def validate_branch_name(name: str) -> str:
    bad = not _BRANCH_CHARS.match(name) or name.startswith(("-", "/")) or name.endswith("/")
    if not bad:
        bad = subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"], capture_output=True).returncode != 0
    if bad:
        raise InvalidInput(
            f"invalid branch name '{name}': git refuses it, or it has characters outside "
            "letters, digits and . _ / + -",
            rule="name.branch",
        )
    return name

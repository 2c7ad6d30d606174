"""Static assets: our CSS and JS from the package; htmx from a set-up-time cache outside the checkout."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from conveyor.core import cache_dir, environment

STATIC = Path(__file__).parent / "static"


@lru_cache(maxsize=1)
def htmx_path() -> Path | None:
    """htmx is installed by scripts/setup.sh from the npm registry; without it pages still work."""
    given = environment().htmx_js
    candidates = [given] if given else []
    candidates.append(cache_dir() / "web" / "node_modules" / "htmx.org" / "dist" / "htmx.min.js")
    for c in candidates:
        if c.expanduser().is_file():
            return c.expanduser()
    return None


def htmx_available() -> bool:
    return htmx_path() is not None

"""Static assets: our CSS and JS from the package; htmx from a set-up-time cache outside the checkout."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

STATIC = Path(__file__).parent / "static"


@lru_cache(maxsize=1)
def htmx_path() -> Path | None:
    """htmx is installed by scripts/setup.sh from the npm registry; without it pages still work."""
    candidates = [os.environ.get("CONVEYOR_HTMX_JS", "")]
    cache = os.environ.get("CONVEYOR_CACHE") or str(Path.home() / ".cache" / "conveyor")
    candidates.append(str(Path(cache) / "web" / "node_modules" / "htmx.org" / "dist" / "htmx.min.js"))
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def htmx_available() -> bool:
    return htmx_path() is not None

"""The agent's image holds only the `agent` extra: its import closure must stay inside it (no server code)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from conveyor.images.conveyor_image import extra_requirements, source_root

# imported when present, skipped when not (the image lacks them and the agent runs there: test_in_cluster.py)
OPTIONAL = {"click"}  # httpx's command line: `try: from ._main import main` in httpx/__init__.py

CLOSURE = """
import json, sys
import conveyor.agent.cli, conveyor.agent.runner
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))))
"""


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def distribution_closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install here, transitively (no extras of theirs)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if _norm(req.name) in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(_norm(req.name))
        todo.extend(Requirement(r) for r in metadata.requires(req.name) or [])
    return seen


def test_the_agent_imports_only_what_its_extra_installs() -> None:
    p = subprocess.run([sys.executable, "-c", CLOSURE], capture_output=True, text=True, check=True)
    # underscored names are the interpreter's and extension modules' internals (_cython_*, _openssl, ...)
    modules = {m for m in json.loads(p.stdout) if not m.startswith("_")} - {"conveyor", "cython_runtime", *OPTIONAL}
    allowed = distribution_closure(extra_requirements(source_root(), "agent"))
    owners = metadata.packages_distributions()
    outside = {m: owners.get(m) for m in modules
               if not {_norm(d) for d in owners.get(m, [])} & allowed}
    assert outside == {}
    assert not modules & {"fastapi", "sqlalchemy", "alembic", "starlette", "uvicorn", "jinja2"}


def test_conveyor_agent_is_an_entry_point_of_the_agent_cli() -> None:
    (ep,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "conveyor-agent"]
    assert ep.value == "conveyor.agent.cli:agent_app"
    assert (Path(sys.executable).parent / "conveyor-agent").exists()

"""What the engine hands a built-in task: a private JSON file named by CONVEYOR_TASK_CONTEXT.

Tasks run as child processes of the engine (``python -m conveyor.pipelines.tasks NAME``) so that
timeouts, cancellation and log capture treat them exactly like ``run:`` steps. A task reports by
writing ``result`` (outputs for later steps and publications for the end of the run) and exits
non-zero with an ``error:`` line on failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from conveyor.pipelines.spec import AppSpec


class TaskFailed(Exception):
    pass


@dataclass
class TaskContext:
    task: str
    params: dict[str, Any]
    app: AppSpec | None
    workspace: Path
    result_path: Path
    run_id: int
    repo: str
    pipeline: str
    build_number: int
    commit: str
    registry: str  # host:port of this Conveyor's registry
    registry_user: str
    registry_token: str  # the run's own token (never a service token)
    container_name: str
    storage_root: str  # the pipelines' containers-storage (see core.containers)
    network: str = "none"  # podman/buildah --network of the run (its own namespace, reaching only Conveyor)
    deployable: bool = False  # a CI run of the protected default branch: the only kind that pushes images
    kubernetes_version: str = ""  # what rendered templates are validated for: the oldest registered cluster's
    outputs: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> TaskContext:
        data = json.loads(path.read_text())
        data["app"] = AppSpec.from_json(data["app"]) if data.get("app") else None
        data["workspace"] = Path(data["workspace"])
        data["result_path"] = Path(data["result_path"])
        return cls(**data)

    def dump(self, path: Path) -> None:
        data = {k: v for k, v in self.__dict__.items() if k != "result"}
        data["app"] = self.app.to_json() if self.app else None
        data["workspace"] = str(self.workspace)
        data["result_path"] = str(self.result_path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)

    def need_app(self) -> AppSpec:
        if self.app is None:
            raise TaskFailed(f"{self.task} needs .conveyor/app.yaml")
        return self.app

    def path(self, relative: str, what: str) -> Path:
        """A path inside the workspace; refuses escapes like ``../../etc``."""
        p = (self.workspace / relative).resolve()
        if not p.is_relative_to(self.workspace.resolve()):
            raise TaskFailed(f"{what} '{relative}' is outside the repository")
        return p

    def expand(self, value: str) -> str:
        """``${CONVEYOR_REGISTRY}``, ``${CONVEYOR_COMMIT}``, ``${CONVEYOR_BUILD_NUMBER}``, ``${APP_VERSION}``."""
        known = {"CONVEYOR_REGISTRY": self.registry, "CONVEYOR_COMMIT": self.commit,
                 "CONVEYOR_BUILD_NUMBER": str(self.build_number),
                 "APP_VERSION": self.app.version if self.app else "", "APP_NAME": self.app.name if self.app else ""}

        def sub(m: re.Match[str]) -> str:
            return known.get(m.group(1), m.group(0))

        return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", sub, value)

    def save(self) -> None:
        self.result_path.write_text(json.dumps(self.result))


def say(line: str) -> None:
    print(line, flush=True)


def fail(message: str) -> NoReturn:
    raise TaskFailed(message)


def run_tool(argv: list[str], *, show: list[str] | None = None, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run a tool with its output streamed to the log; returns (exit code, last 40 lines)."""
    say("$ " + " ".join(show or argv))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    tail: list[str] = []
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        tail = (tail + [line])[-40:]
    return proc.wait(), tail


def last_error(lines: list[str]) -> str:
    for line in reversed(lines):
        low = line.lower()
        if "error" in low or "failed" in low or "denied" in low:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"

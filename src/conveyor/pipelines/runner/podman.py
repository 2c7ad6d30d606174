"""The podman executor: every ``run:`` step in a container, on the run's own network.

A step's container sees the workspace at ``/workspace``, the run's environment (its run token as
``CONVEYOR_TOKEN``, never a service token) and a network of its own (``RunNetwork``) from which it
reaches this Conveyor and nothing else. Built-in tasks (``uses:``) are Conveyor's own code and run
as processes of the runner; the untrusted part of them — a Dockerfile's ``RUN`` lines — runs in
buildah's OCI (runc) isolation on that same network. A ``host: true`` step runs on the runner's
host only where an administrator enabled it for the repository, and never for a pull request.

Containers carry the labels ``conveyor.runner`` and ``conveyor.instance``, so a runner starting
again removes what its crashed predecessor left (``sweep``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.core.containers import podman
from conveyor.pipelines.process import Outcome, run_process
from conveyor.pipelines.spec import StepSpec

HOST_ONLY_ENV = ("PATH", "HOME", "LANG")


class StepRefused(Exception):
    """The step may not run as written (host execution not allowed, bad working directory)."""


@dataclass(frozen=True)
class RunNetwork:
    """How a run's containers are networked: podman's ``--network`` value, and the server's address
    as the steps see it (``http://127.0.0.1:PORT`` inside the run's network namespace)."""

    mode: str = "none"
    server_url: str | None = None

    @property
    def registry(self) -> str | None:
        return self.server_url.split("://", 1)[1] if self.server_url else None


@dataclass
class Sandbox:
    """One run's place on the runner: workspace, private files, network, identity labels."""

    run_id: int
    workspace: Path
    private: Path
    storage_root: str
    runner: str
    instance: str
    registry: str  # host:port of the server's registry, as the runner's host reaches it
    network: RunNetwork = field(default_factory=RunNetwork)
    host_execution: bool = False
    default_image: str = "cache/debian-python:12"

    def container(self, index: int) -> str:
        return f"conveyor-run-{self.run_id}-s{index}"

    def labels(self) -> list[str]:
        return ["--label", f"conveyor.runner={self.runner}", "--label", f"conveyor.instance={self.instance}"]


def resolve_image(image: str, registry: str) -> str:
    """``cache/debian-python:12`` names this Conveyor's registry; ``host[:port]/...`` another one."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"{registry}/{image}"


def _remove(sandbox: Sandbox, name: str) -> None:
    subprocess.run(podman("rm", "-f", "-t", "0", name, root=sandbox.storage_root), capture_output=True, timeout=60)


def step_argv(sandbox: Sandbox, index: int, spec: StepSpec, env: dict[str, str]) -> tuple[list[str], Path,
                                                                                         Callable[[], None]]:
    """(argv, cwd, what to do when the step is stopped) for one step."""
    ws = sandbox.workspace
    name = sandbox.container(index)
    if spec.kind == "uses":
        return [sys.executable, "-m", "conveyor.pipelines.tasks"], ws, lambda: _remove(sandbox, name)
    wd = (ws / spec.working_directory).resolve()
    if not wd.is_relative_to(ws.resolve()) or not wd.is_dir():
        raise StepRefused(f"working_directory '{spec.working_directory}' is not a directory in the repository")
    if spec.host:
        if not sandbox.host_execution:
            raise StepRefused("host: true, but host execution is not enabled for this repository's non-PR "
                              "pipelines (an administrator enables it; rule pipeline.host-execution)")
        return ["/bin/sh", "-e", "-c", spec.script], wd, lambda: None
    image = resolve_image(spec.image or sandbox.default_image, sandbox.registry)
    argv = podman("run", "--rm", "--name", name, *sandbox.labels(), "--network", sandbox.network.mode,
                  "--tls-verify=false", "--authfile", str(sandbox.private / "auth.json"),
                  "-v", f"{ws}:/workspace", "-w", f"/workspace/{wd.relative_to(ws.resolve()).as_posix()}",
                  root=sandbox.storage_root)
    for key in env:
        if key not in HOST_ONLY_ENV:
            argv += ["--env", key]  # the value comes from podman's environment, not its argv
    argv += ["--entrypoint", "/bin/sh", image, "-e", "-c", spec.script]
    return argv, ws, lambda: _remove(sandbox, name)


def run_step(sandbox: Sandbox, index: int, spec: StepSpec, env: dict[str, str], *, sink: Callable[[str], None],
             mask: Callable[[str], str], should_cancel: Callable[[], bool], max_output: int,
             tick: Callable[[], None], preexec: Callable[[], None] | None) -> Outcome:
    argv, cwd, on_stop = step_argv(sandbox, index, spec, env)
    try:
        return run_process(argv, cwd=cwd, env=env, timeout=spec.timeout, sink=sink, mask=mask,
                           should_cancel=should_cancel, max_output=max_output, tick=tick, on_stop=on_stop,
                           preexec=preexec)
    finally:
        if spec.kind == "run" and not spec.host:
            _remove(sandbox, sandbox.container(index))  # killed podman clients can leave the container


def sweep(storage_root: str, runner: str, keep_instance: str) -> int:
    """Remove containers earlier instances of this runner left behind (a crash, kill -9)."""
    p = subprocess.run(podman("ps", "-a", "--filter", f"label=conveyor.runner={runner}",
                              "--format", "{{.Names}} {{.Labels}}", root=storage_root),
                       capture_output=True, text=True, timeout=60)
    names = [ln.split()[0] for ln in p.stdout.splitlines()
             if ln.strip() and f"conveyor.instance:{keep_instance}" not in ln]
    for n in names:
        subprocess.run(podman("rm", "-f", "-t", "0", n, root=storage_root), capture_output=True, timeout=60)
    return len(names)

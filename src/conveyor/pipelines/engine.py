"""Executes one claimed run: checkout, parse, steps in order, publish, finish.

A failed step stops the run; its name and message become the run's ``failed_step`` and
``message`` (and so the commit status description). Publications (image pushes, artifacts)
happen only after every step has passed, in a final ``publish`` step.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from conveyor.core import Database, Settings, record, utcnow
from conveyor.core.containers import podman
from conveyor.pipelines import artifacts, queue, secrets
from conveyor.pipelines.config import EngineConfig, containers_root, oldest_cluster_version, run_url, workspaces_dir
from conveyor.pipelines.identity import SERVICE_USER
from conveyor.pipelines.logs import LogWriter
from conveyor.pipelines.models import Artifact, Run, Step
from conveyor.pipelines.process import Outcome, run_process
from conveyor.pipelines.spec import AppSpec, SpecError, StepSpec, load_workspace
from conveyor.pipelines.tasks import PUBLISH
from conveyor.pipelines.tasks.context import TaskContext
from conveyor.pipelines.workspace import CheckoutError, checkout

try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _libc = None
PR_SET_PDEATHSIG = 1
HOST_ONLY_ENV = ("PATH", "HOME", "LANG")


def _die_with_parent() -> None:
    # If the worker dies outright, the step's top process is killed with it.
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Control:
    """How the pool talks to a run in flight."""

    cancel: threading.Event = field(default_factory=threading.Event)
    shutdown: threading.Event = field(default_factory=threading.Event)

    def stop_requested(self) -> bool:
        return self.cancel.is_set() or self.shutdown.is_set()


class StepFailed(Exception):
    def __init__(self, step: str | None, message: str, state: str = "failure") -> None:
        super().__init__(f"{step}: {message}" if step else message)
        self.step, self.message, self.state = step, message, state


def resolve_image(image: str, registry: str) -> str:
    """``cache/debian-python:12`` names this Conveyor's registry; ``host[:port]/...`` another one."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"{registry}/{image}"


class RunExecutor:
    def __init__(self, db: Database, settings: Settings, config: EngineConfig, token: str, owner: str,
                 registry_host: str) -> None:
        self.db, self.settings, self.config, self.token = db, settings, config, token
        self.owner, self.registry = owner, registry_host
        self.storage_root = str(containers_root(settings))

    # --- bookkeeping -------------------------------------------------------------------------
    def _add_step(self, run_id: int, index: int, name: str, kind: str) -> int:
        return self._add_steps(run_id, [(index, name, kind)])[0]

    def _add_steps(self, run_id: int, steps: list[tuple[int, str, str]]) -> list[int]:
        with self.db.session() as s:
            rows = [Step(run_id=run_id, index=i, name=name[:200], kind=kind, state="pending")
                    for i, name, kind in steps]
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]

    def _set_step(self, step_id: int, **values: Any) -> None:
        with self.db.session() as s:
            step = s.get(Step, step_id)
            if step is not None:
                for k, v in values.items():
                    setattr(step, k, v)

    def _save_outputs(self, run_id: int, outputs: dict[str, Any]) -> None:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            if run is not None:
                run.outputs = dict(outputs)

    # --- the run ---------------------------------------------------------------------------
    def execute(self, run_id: int, control: Control) -> None:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            if run is None or run.state != "running" or run.lease_owner != self.owner:
                return
            info = dict(repo=run.repo_name, repo_id=run.repo_id, sha=run.sha, pipeline=run.pipeline,
                        number=run.number, attempt=run.attempt, ref=run.ref)
            repo_secrets = secrets.load_secrets(s, self.settings, run.repo_id)
            first_index = (s.execute(select(Step.index).where(Step.run_id == run_id)
                                     .order_by(Step.index.desc()).limit(1)).scalar_one_or_none() or -1) + 1
        log = LogWriter(self.db, run_id)
        masker = secrets.Masker([*repo_secrets.values(), self.token])
        root = workspaces_dir(self.settings) / f"run-{run_id}"
        ws, private = root / "src", root / "private"
        state, failed_step, message = "success", None, ""
        outputs: dict[str, Any] = {}
        publications: list[dict[str, Any]] = []
        try:
            log.line(f"== run #{info['number']} ({info['pipeline']}) of {info['repo']} at {info['sha']} "
                     f"attempt {info['attempt']} on {self.owner}")
            index = first_index
            setup_id = self._add_step(run_id, index, "setup", "setup")
            self._set_step(setup_id, state="running", started_at=utcnow())
            log.set_step(index)
            try:
                if root.exists():
                    shutil.rmtree(root)
                private.mkdir(parents=True)
                os.chmod(private, 0o700)
                self._write_authfile(private / "auth.json")
                source = checkout(self.settings, str(info["repo"]), str(info["sha"]), ws, self.token)
                log.line(f"checked out {info['sha']} from {source}")
                pipelines, app = load_workspace(ws)
            except (CheckoutError, SpecError) as exc:
                self._set_step(setup_id, state="failure", finished_at=utcnow(), message=str(exc))
                log.line(f"error: {exc}")
                raise StepFailed("setup", str(exc)) from None
            steps = pipelines.get(str(info["pipeline"]), [])
            if not steps:
                msg = f"{info['pipeline']}: .conveyor/pipeline.yaml has no '{info['pipeline']}' pipeline"
                self._set_step(setup_id, state="failure", finished_at=utcnow(), message=msg)
                log.line(f"error: {msg}")
                raise StepFailed("setup", msg)
            log.line(f"{len(steps)} step(s): " + ", ".join(s.name for s in steps))
            self._set_step(setup_id, state="success", finished_at=utcnow())
            ids = self._add_steps(run_id, [(index + 1 + i, spec.name, spec.kind) for i, spec in enumerate(steps)])
            for i, (spec, step_id) in enumerate(zip(steps, ids, strict=True)):
                if control.stop_requested():
                    break
                result = self._run_step(run_id, info, index + 1 + i, step_id, spec, app, ws, private, log, masker,
                                        control, outputs, repo_secrets)
                if result.get("outputs"):
                    outputs.update(result["outputs"])
                    self._save_outputs(run_id, outputs)
                publications.extend(result.get("publish") or [])
            needs_publish = bool(publications) or bool((outputs.get("image") or {}).get("push"))
            if needs_publish and not control.stop_requested():
                pub_index = index + 1 + len(steps)
                spec = StepSpec(name=PUBLISH, kind="uses", task=PUBLISH)
                step_id = self._add_step(run_id, pub_index, PUBLISH, "publish")
                result = self._run_step(run_id, info, pub_index, step_id, spec, app, ws, private, log, masker,
                                        control, outputs, repo_secrets)
                outputs.update(result.get("outputs") or {})
                outputs["artifacts"] = self._publish_artifacts(run_id, publications, log)
                self._save_outputs(run_id, outputs)
            if control.stop_requested():
                raise StepFailed(None, "cancelled", "cancelled")
        except StepFailed as exc:
            state, failed_step, message = exc.state, exc.step, exc.message
        except Exception as exc:  # a bug or an infrastructure failure: the run must still end
            state, message = "error", f"internal error: {type(exc).__name__}: {exc}"
            log.line(message)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if control.shutdown.is_set() and not control.cancel.is_set():
            log.line("== the worker is shutting down; the run will be retried")
            log.flush()
            self._release(run_id, "was interrupted: the server shut down")
            return
        log.line(f"== run {state}" + (f" at step '{failed_step}'" if failed_step else "") +
                 (f": {message}" if message else ""))
        log.flush()
        self._finish(run_id, state, failed_step, message, outputs)

    def _write_authfile(self, path: Path) -> None:
        """Credentials for pulls from this Conveyor's registry, in a file rather than on command lines."""
        import base64

        auth = base64.b64encode(f"{SERVICE_USER}:{self.token}".encode()).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {self.registry: {"auth": auth}}}, f)

    def _release(self, run_id: int, why: str) -> None:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            if run is not None and run.state == "running" and run.lease_owner == self.owner:
                queue._interrupt(s, run, self.config.max_attempts, why)

    def _finish(self, run_id: int, state: str, failed_step: str | None, message: str,
                outputs: dict[str, Any]) -> None:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            if run is None or run.state != "running" or run.lease_owner != self.owner:
                return  # the lease was lost; whoever took the run over reports it
            run.state, run.failed_step, run.message = state, failed_step, message[:4000]
            run.finished_at = utcnow()
            run.outputs = dict(outputs)
            run.lease_owner, run.lease_expires_at = None, None
            target = f"{run.repo_name}#run-{run.number}"
            record(s, actor=SERVICE_USER, action="pipeline.run.finished", target=target,
                   payload=queue.run_payload(run, failed_step=failed_step, message=run.message,
                                             url=run_url(self.settings, run.id)))
            if state == "success" and run.pipeline == "ci":
                arts = s.execute(select(Artifact).where(Artifact.run_id == run.id)).scalars().all()
                image = outputs.get("image") or {}
                record(s, actor=SERVICE_USER, action="pipeline.ci.succeeded", target=target, payload={
                    **queue.run_payload(run, url=run_url(self.settings, run.id)),
                    "image": {"repository": image.get("repository"), "digest": image.get("digest"),
                              "tags": image.get("tags", [])} if image.get("pushed") else None,
                    "artifacts": [{"name": a.name, "kind": a.kind, "digest": a.digest, "size": a.size,
                                   "media_type": a.media_type,
                                   "url": f"{self.settings.base_url}/api/v1/artifacts/{a.digest}"} for a in arts],
                })

    def _publish_artifacts(self, run_id: int, publications: list[dict[str, Any]], log: LogWriter) -> list[str]:
        digests = []
        with self.db.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            for p in publications:
                a = artifacts.publish(s, self.settings, run, p["name"], p["kind"], Path(p["path"]), p["media_type"],
                                      self.config.artifact_retention_days)
                log.line(f"published artifact {a.name} ({a.kind}, {a.size} bytes) {a.digest}")
                digests.append(a.digest)
        return digests

    # --- one step --------------------------------------------------------------------------
    def _run_step(self, run_id: int, info: dict[str, Any], index: int, step_id: int, spec: StepSpec,
                  app: AppSpec | None, ws: Path, private: Path, log: LogWriter, masker: secrets.Masker,
                  control: Control, outputs: dict[str, Any], repo_secrets: dict[str, str]) -> dict[str, Any]:
        log.set_step(index)
        started = time.monotonic()
        self._set_step(step_id, state="running", started_at=utcnow())
        log.line(f"-- step {index}: {spec.name}")
        container = f"conveyor-run-{run_id}-s{index}"
        result_path = private / f"step-{index}.json"
        last_line = [""]

        def sink(text: str) -> None:
            for ln in text.splitlines():
                if ln.strip():
                    last_line[0] = ln.strip()
            log.write(text)

        try:
            env = self._step_env(info, spec, repo_secrets, private)
        except KeyError as exc:
            msg = f"the step refers to an unknown secret {exc.args[0]!r}"
            log.line(f"error: {msg}")
            self._set_step(step_id, state="failure", finished_at=utcnow(), message=msg)
            raise StepFailed(spec.name, msg) from None
        cwd = ws
        on_stop: Callable[[], None] = lambda: None  # noqa: E731
        if spec.kind == "run":
            wd = (ws / spec.working_directory).resolve()
            if not wd.is_relative_to(ws.resolve()) or not wd.is_dir():
                msg = f"working_directory '{spec.working_directory}' is not a directory in the repository"
                log.line(f"error: {msg}")
                self._set_step(step_id, state="failure", finished_at=utcnow(), message=msg)
                raise StepFailed(spec.name, msg)
            if spec.image:
                image = resolve_image(spec.image, self.registry)
                argv = podman("run", "--rm", "--name", container, "--network", "host", "--tls-verify=false",
                              "--authfile", str(private / "auth.json"), "-v", f"{ws}:/workspace",
                              "-w", f"/workspace/{wd.relative_to(ws.resolve()).as_posix()}", root=self.storage_root)
                for key in env:
                    if key not in HOST_ONLY_ENV:
                        argv += ["--env", key]  # the value comes from podman's environment, not its argv
                argv += ["--entrypoint", "/bin/sh", image, "-e", "-c", spec.script]

                def on_stop() -> None:
                    import subprocess

                    subprocess.run(podman("rm", "-f", "-t", "0", container, root=self.storage_root),
                                   capture_output=True, timeout=60)
            else:
                argv = ["/bin/sh", "-e", "-c", spec.script]
                cwd = wd
        else:
            ctx = TaskContext(task=spec.task, params=spec.params, app=app, workspace=ws, result_path=result_path,
                              run_id=run_id, repo=str(info["repo"]), pipeline=str(info["pipeline"]),
                              build_number=int(info["number"]), commit=str(info["sha"]), registry=self.registry,
                              registry_user=SERVICE_USER, registry_token=self.token, container_name=container,
                              storage_root=self.storage_root, outputs=outputs, secrets=repo_secrets,
                              kubernetes_version=oldest_cluster_version(self.settings.data_dir))
            context_file = private / f"step-{index}.context.json"
            ctx.dump(context_file)
            env["CONVEYOR_TASK_CONTEXT"] = str(context_file)
            env["PYTHONUNBUFFERED"] = "1"
            import sys

            argv = [sys.executable, "-m", "conveyor.pipelines.tasks"]

            def on_stop() -> None:
                import subprocess

                subprocess.run(podman("rm", "-f", "-t", "0", container, root=self.storage_root), capture_output=True,
                                   timeout=60)

        outcome = run_process(argv, cwd=cwd, env=env, timeout=spec.timeout, sink=sink, mask=masker,
                              should_cancel=control.stop_requested, max_output=self.config.max_log_bytes,
                              tick=log.maybe_flush, on_stop=on_stop, preexec=_die_with_parent,
                              on_start=lambda pgid: self._set_step(step_id, pgid=pgid))
        result: dict[str, Any] = {}
        if result_path.exists():
            try:
                result = json.loads(result_path.read_text())
            except ValueError:
                result = {}
        elapsed = time.monotonic() - started
        if outcome.ok:
            log.line(f"-- step {index} passed in {elapsed:.1f}s")
            self._set_step(step_id, state="success", exit_code=0, finished_at=utcnow())
            return result
        msg, state = self._explain(outcome, spec, result, last_line[0], control)
        log.line(f"error: {msg}")
        self._set_step(step_id, state="cancelled" if state == "cancelled" else "failure", exit_code=outcome.exit_code,
                       finished_at=utcnow(), message=masker(msg))
        raise StepFailed(spec.name, masker(msg), state)

    def _explain(self, outcome: Outcome, spec: StepSpec, result: dict[str, Any], last_line: str,
                 control: Control) -> tuple[str, str]:
        if outcome.reason == "timeout":
            return f"timed out after {spec.timeout}s; all of the step's processes were killed", "failure"
        if outcome.reason == "cancelled":
            return ("stopped: the worker is shutting down" if control.shutdown.is_set() else "cancelled",
                    "cancelled")
        if outcome.reason == "output-limit":
            mib = self.config.max_log_bytes // (1024 * 1024)
            return f"stopped: the step wrote more than {mib} MiB of output", "failure"
        if outcome.reason == "start-failed":
            return outcome.detail, "failure"
        if result.get("message"):
            return str(result["message"]), "failure"
        tail = f": {last_line[:300]}" if last_line else ""
        return f"exited with code {outcome.exit_code}{tail}", "failure"

    def _step_env(self, info: dict[str, Any], spec: StepSpec, repo_secrets: dict[str, str],
                  private: Path) -> dict[str, str]:
        home = private / "home"
        home.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "CI": "true",
            "CONVEYOR": "true",
            "CONVEYOR_REPO": str(info["repo"]),
            "CONVEYOR_COMMIT": str(info["sha"]),
            "CONVEYOR_REF": str(info["ref"]),
            "CONVEYOR_PIPELINE": str(info["pipeline"]),
            "CONVEYOR_BUILD_NUMBER": str(info["number"]),
            "CONVEYOR_REGISTRY": self.registry,
        }
        for key, value in spec.env.items():
            env[key] = secrets.expand(value, repo_secrets)
        return env

"""One claimed run on a runner: checkout, parse, steps (in order or as a DAG), publish, finish.

A failed step fails the run; its name and message become the run's ``failed_step`` and ``message``
(and so the commit status). Publications (image pushes, artifacts) happen only after every step has
passed, in a final ``publish`` step. Everything goes to the server through ``RunnerClient``; the
only credential the run's steps and tasks get is the run's token.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.core.db import utcnow
from conveyor.pipelines.process import Outcome
from conveyor.pipelines.runner import podman
from conveyor.pipelines.runner.client import LeaseLost, RunnerClient, ServerRefused
from conveyor.pipelines.runner.logbuf import LogBuffer
from conveyor.pipelines.runner.network import RunNetworkScope
from conveyor.pipelines.runner.plan import Plan, StepState
from conveyor.pipelines.secrets import Masker, expand
from conveyor.pipelines.spec import AppSpec, PipelineSpec, SpecError, StepSpec, load_workspace
from conveyor.pipelines.tasks import PUBLISH
from conveyor.pipelines.tasks.context import TaskContext

try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _libc = None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the runner dies outright, the step's top process is killed with it.
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Control:
    """How the runner talks to a run in flight."""

    cancel: threading.Event = field(default_factory=threading.Event)
    shutdown: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)

    def stop_requested(self) -> bool:
        return self.cancel.is_set() or self.shutdown.is_set() or self.lost.is_set()


class StepFailed(Exception):
    def __init__(self, step: str | None, message: str, state: str = "failure") -> None:
        super().__init__(f"{step}: {message}" if step else message)
        self.step, self.message, self.state = step, message, state


@dataclass(frozen=True)
class RunnerSettings:
    server: str
    name: str
    instance: str
    work_dir: Path
    storage_root: str
    max_log_bytes: int = 10 * 1024 * 1024
    step_parallelism: int = 4
    default_image: str = "cache/debian-python:12"

    @property
    def registry(self) -> str:
        return self.server.split("://", 1)[1].rstrip("/")


class CheckoutError(RuntimeError):
    pass


def git_checkout(server: str, repo: str, sha: str, dest: Path, token: str) -> None:
    """``dest`` (emptied first) holds exactly ``sha``, fetched over git smart HTTP with the run's token."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", HOME=str(dest), GIT_CONFIG_COUNT="1",
               GIT_CONFIG_KEY_0="http.extraHeader", GIT_CONFIG_VALUE_0=f"Authorization: Bearer {token}")
    for args in (["init", "-q"], ["fetch", "-q", "--depth", "1", f"{server}/git/{repo}.git", sha],
                 ["-c", "advice.detachedHead=false", "checkout", "-q", sha]):
        p = subprocess.run(["git", *args], cwd=dest, env=env, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise CheckoutError(f"git {args[0]} failed: {(p.stderr or p.stdout).strip()}")
    escaping = [str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_symlink()
                and not p.resolve().is_relative_to(dest.resolve()) and ".git" not in p.relative_to(dest).parts]
    if escaping:
        raise CheckoutError(f"symbolic links pointing outside the repository are refused: {', '.join(escaping[:5])} "
                            "(rule pipeline.symlink-escape)")


class RunExecution:
    def __init__(self, client: RunnerClient, settings: RunnerSettings, claim: dict[str, Any], control: Control) -> None:
        self.client, self.settings, self.control = client, settings, control
        self.info: dict[str, Any] = claim["run"]
        self.run_id = int(self.info["run_id"])
        self.token: str = claim["run_token"]
        self.secrets: dict[str, str] = dict(claim.get("secrets") or {})
        root = settings.work_dir / f"run-{self.run_id}"
        self.root, self.ws, self.private = root, root / "src", root / "private"
        self.sandbox = podman.Sandbox(run_id=self.run_id, workspace=self.ws, private=self.private,
                                      storage_root=settings.storage_root, runner=settings.name,
                                      instance=settings.instance, registry=settings.registry,
                                      host_execution=bool(claim.get("host_execution")),
                                      default_image=settings.default_image)
        self.log = LogBuffer(client, self.run_id)
        self.masker = Masker([*self.secrets.values(), self.token])
        self.outputs: dict[str, Any] = {}
        self.publications: list[dict[str, Any]] = []
        self._messages: dict[int, str] = {}  # step index -> why it failed
        self._lock = threading.Lock()

    # --- the run ----------------------------------------------------------------------------
    def execute(self) -> None:
        first = int(self.info.get("first_step_index", 0))
        state, failed_step, message = "success", None, ""
        self._open()
        try:
            self.log.line(first, f"== run #{self.info['number']} ({self.info['pipeline']}) of {self.info['repo']} at "
                                 f"{self.info['sha']} attempt {self.info['attempt']} on {self.settings.name}")
            spec, app = self._setup(first)
            self._steps(first + 1, spec, app)
            if self.control.stop_requested():
                raise StepFailed(None, "cancelled", "cancelled")
            self._publish(first + 1 + len(spec.steps), app)
        except StepFailed as exc:
            state, failed_step, message = exc.state, exc.step, exc.message
        except LeaseLost:
            self.control.lost.set()
        except Exception as exc:  # a bug or an infrastructure failure: the run must still end
            state, message = "error", f"internal error: {type(exc).__name__}: {exc}"
            self.log.line(first, message)
        finally:
            self._close()
            shutil.rmtree(self.root, ignore_errors=True)
        self._end(first, state, failed_step, message)

    # --- what an executor provides (podman here; kubernetes.py overrides) ------------------------
    def _open(self) -> None:
        self._network = RunNetworkScope(self.settings.server, self.settings.name, self.settings.instance,
                                        self.run_id)
        self.sandbox.network = self._network.open()

    def _close(self) -> None:
        self._network.close()

    def _order(self, spec: PipelineSpec) -> tuple[list[StepSpec], bool, int]:
        """The steps, whether they form a DAG, and how many run at once."""
        return spec.steps, spec.parallel, self.settings.step_parallelism if spec.parallel else 1

    def _prepare(self, base: int, steps: list[StepSpec]) -> None:
        """Called once before the first step starts."""

    def _run(self, index: int, spec: StepSpec, env: dict[str, str], sink: Callable[[str], None]) -> Outcome:
        return podman.run_step(self.sandbox, index, spec, env, sink=sink, mask=self.masker,
                               should_cancel=self.control.stop_requested, max_output=self.settings.max_log_bytes,
                               tick=self.log.maybe_flush, preexec=_die_with_parent)

    def _end(self, first: int, state: str, failed_step: str | None, message: str) -> None:
        if self.control.lost.is_set():
            return  # the run was taken away; whoever has it now reports it
        if self.control.shutdown.is_set() and not self.control.cancel.is_set():
            self.log.line(first, "== the runner is shutting down; the run will be retried")
            self.log.flush()
            self.client.release(self.run_id, "was interrupted: its runner shut down")
            return
        self.log.line(first, f"== run {state}" + (f" at step '{failed_step}'" if failed_step else "") +
                      (f": {message}" if message else ""))
        self.log.flush()
        self.client.finish(self.run_id, state, failed_step, message, self.outputs)

    def _setup(self, index: int) -> tuple[PipelineSpec, AppSpec | None]:
        self.client.add_steps(self.run_id, [{"index": index, "name": "setup", "kind": "setup"}])
        self.client.update_step(self.run_id, index, state="running", started_at=utcnow())
        try:
            if self.root.exists():
                shutil.rmtree(self.root)
            self.private.mkdir(parents=True)
            os.chmod(self.private, 0o700)
            self._write_authfile()
            git_checkout(self.settings.server, str(self.info["repo"]), str(self.info["sha"]), self.ws, self.token)
            self.log.line(index, f"checked out {self.info['sha']}")
            pipelines, app = load_workspace(self.ws)
            spec = pipelines.get(str(self.info["pipeline"]))
            if spec is None:
                raise SpecError(".conveyor/pipeline.yaml", 1, 1, f"there is no '{self.info['pipeline']}' pipeline")
        except (CheckoutError, SpecError) as exc:
            self.client.update_step(self.run_id, index, state="failure", finished_at=utcnow(), message=str(exc))
            self.log.line(index, f"error: {exc}")
            raise StepFailed("setup", str(exc)) from None
        mode = "a DAG of needs" if spec.parallel else "in order"
        self.log.line(index, f"{len(spec.steps)} step(s), {mode}: " + ", ".join(s.name for s in spec.steps))
        self.client.update_step(self.run_id, index, state="success", finished_at=utcnow())
        return spec, app

    def _write_authfile(self) -> None:
        """Registry credentials (the run's token) in a file, not on command lines."""
        auth = base64.b64encode(f"token:{self.token}".encode()).decode()
        fd = os.open(self.private / "auth.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {self.settings.registry: {"auth": auth}}}, f)

    # --- steps ------------------------------------------------------------------------------
    def _steps(self, base: int, spec: PipelineSpec, app: AppSpec | None) -> None:
        steps, parallel, limit = self._order(spec)
        self.client.add_steps(self.run_id, [{"index": base + i, "name": s.name, "kind": s.kind, "needs": list(s.needs)}
                                            for i, s in enumerate(steps)])
        plan = Plan(steps, parallel)
        self._prepare(base, steps)
        futures: dict[Future[StepState], int] = {}
        with ThreadPoolExecutor(max_workers=max(1, limit), thread_name_prefix=f"run-{self.run_id}") as pool:
            while not plan.finished:
                if self.control.stop_requested():
                    self._report_skipped(base, plan, plan.stop("not run: the run was stopped"))
                for i in plan.ready(limit) if not self.control.stop_requested() else []:
                    plan.start(i)
                    futures[pool.submit(self._step, base + i, steps[i], app)] = i
                if not futures:
                    break
                done = next(iter(f for f in list(futures) if f.done()), None)
                if done is None:
                    time.sleep(0.05)
                    self.log.maybe_flush()
                    continue
                i = futures.pop(done)
                self._report_skipped(base, plan, plan.finish(i, done.result()))
        failed = plan.first_failure()
        if failed is not None:
            st = plan.states[failed]
            raise StepFailed(steps[failed].name, self._messages.get(base + failed, st.value),
                             "cancelled" if st == StepState.CANCELLED else "failure")

    def _report_skipped(self, base: int, plan: Plan, skipped: list[int]) -> None:
        for j in skipped:
            why = plan.why_skipped.get(j, "not run")
            self.log.line(base + j, f"-- step {base + j}: {plan.steps[j].name} {why}")
            self.client.update_step(self.run_id, base + j, state="skipped", message=why)

    def _step(self, index: int, spec: StepSpec, app: AppSpec | None) -> StepState:
        """Run one step to its end; returns its final state (and records a failure's message)."""
        started = time.monotonic()
        self.client.update_step(self.run_id, index, state="running", started_at=utcnow())
        self.log.line(index, f"-- step {index}: {spec.name}")
        last_line = [""]

        def sink(text: str) -> None:
            for ln in text.splitlines():
                if ln.strip():
                    last_line[0] = ln.strip()
            self.log.write(index, text)

        result_path = self.private / f"step-{index}.json"
        try:
            env = self._env(spec)
            if spec.kind == "uses":
                env.update(self._task_context(index, spec, app, result_path))
            outcome = self._run(index, spec, env, sink)
        except KeyError as exc:
            return self._fail(index, f"the step refers to an unknown secret {exc.args[0]!r}")
        except podman.StepRefused as exc:
            return self._fail(index, str(exc))
        result = self._result(result_path)
        if outcome.ok:
            self.log.line(index, f"-- step {index} passed in {time.monotonic() - started:.1f}s")
            with self._lock:
                self.outputs.update(result.get("outputs") or {})
                self.publications.extend(result.get("publish") or [])
            self.client.update_step(self.run_id, index, state="success", exit_code=0, finished_at=utcnow())
            return StepState.SUCCESS
        msg, cancelled = self._explain(outcome, spec, result, last_line[0])
        return self._fail(index, self.masker(msg), outcome.exit_code, cancelled)

    def _fail(self, index: int, msg: str, exit_code: int | None = None, cancelled: bool = False) -> StepState:
        self.log.line(index, f"error: {msg}")
        state = StepState.CANCELLED if cancelled else StepState.FAILURE
        self._messages[index] = msg
        self.client.update_step(self.run_id, index, state=state.value, exit_code=exit_code, finished_at=utcnow(),
                                message=msg)
        return state

    @staticmethod
    def _result(path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
            return data
        except ValueError:
            return {}

    def _explain(self, outcome: Outcome, spec: StepSpec, result: dict[str, Any], last: str) -> tuple[str, bool]:
        if outcome.reason == "timeout":
            return f"timed out after {spec.timeout}s; all of the step's processes were killed", False
        if outcome.reason == "cancelled":
            return ("stopped: the runner is shutting down" if self.control.shutdown.is_set() else "cancelled"), True
        if outcome.reason == "output-limit":
            mib = self.settings.max_log_bytes // (1024 * 1024)
            return f"stopped: the step wrote more than {mib} MiB of output", False
        if outcome.reason == "start-failed":
            return outcome.detail, False
        if result.get("message"):
            return str(result["message"]), False
        return f"exited with code {outcome.exit_code}" + (f": {last[:300]}" if last else ""), False

    def _env(self, spec: StepSpec) -> dict[str, str]:
        home = self.private / "home"
        home.mkdir(exist_ok=True)
        # The server as this step reaches it: inside the run's network, or from the host.
        inside = self.settings.server if spec.host else self.sandbox.network.server_url
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(home),
            "CI": "true", "CONVEYOR": "true", "CONVEYOR_REPO": str(self.info["repo"]),
            "CONVEYOR_COMMIT": str(self.info["sha"]), "CONVEYOR_REF": str(self.info["ref"]),
            "CONVEYOR_PIPELINE": str(self.info["pipeline"]), "CONVEYOR_BUILD_NUMBER": str(self.info["number"]),
            "CONVEYOR_RUN_ID": str(self.run_id), "CONVEYOR_RUN_ATTEMPT": str(self.info["attempt"]),
            "CONVEYOR_REGISTRY": self.sandbox.network.registry or self.settings.registry,
            "CONVEYOR_TOKEN": self.token,
        }
        if inside:
            env["CONVEYOR_SERVER"] = inside
        for key, value in spec.env.items():
            env[key] = expand(value, self.secrets)
        return env

    def _task_context(self, index: int, spec: StepSpec, app: AppSpec | None, result_path: Path) -> dict[str, str]:
        with self._lock:
            outputs = dict(self.outputs)
        ctx = TaskContext(task=spec.task, params=spec.params, app=app, workspace=self.ws, result_path=result_path,
                          run_id=self.run_id, repo=str(self.info["repo"]), pipeline=str(self.info["pipeline"]),
                          build_number=int(self.info["number"]), commit=str(self.info["sha"]),
                          registry=self.settings.registry, registry_user="token", registry_token=self.token,
                          container_name=self.sandbox.container(index), storage_root=self.settings.storage_root,
                          network=self.sandbox.network.mode, outputs=outputs, secrets=self.secrets,
                          deployable=bool(self.info.get("deployable")),
                          kubernetes_version=str(self.info.get("kubernetes_version") or ""))
        context_file = self.private / f"step-{index}.context.json"
        ctx.dump(context_file)
        return {"CONVEYOR_TASK_CONTEXT": str(context_file), "PYTHONUNBUFFERED": "1"}

    # --- publish ----------------------------------------------------------------------------
    def _sign(self, index: int) -> None:
        """The server signs what the publish step pushed to Conveyor's registry (the runner asks with
        its own token; no step ever holds the key). An image that cannot be signed fails the run:
        agents refuse unsigned images."""
        image = self.outputs.get("image") or {}
        if not image.get("pushed") or image.get("external"):
            return
        repository = str(image["repository"]).split("/", 1)[1]
        try:
            out = self.client.sign(self.run_id, repository, str(image["digest"]))
        except ServerRefused as exc:
            self.client.update_step(self.run_id, index, state="failure", finished_at=utcnow(),
                                    message=f"signing failed: {exc.detail}")
            raise StepFailed(PUBLISH, f"signing {repository}@{image['digest']} failed: {exc.detail}") from None
        image["signed_by"] = out["key_id"]
        self.log.line(index, f"signed {repository}@{image['digest']} with key {out['key_id']}")

    def _publish(self, index: int, app: AppSpec | None) -> None:
        if not self.publications and not (self.outputs.get("image") or {}).get("push"):
            return
        self.client.add_steps(self.run_id, [{"index": index, "name": PUBLISH, "kind": "publish"}])
        spec = StepSpec(name=PUBLISH, kind="uses", task=PUBLISH)
        state = self._step(index, spec, app)
        if state != StepState.SUCCESS:
            raise StepFailed(PUBLISH, self._messages.get(index, state.value),
                             "cancelled" if state == StepState.CANCELLED else "failure")
        self._sign(index)
        digests = []
        for p in self.publications:
            out = self.client.upload_artifact(self.run_id, p["name"], p["kind"], p["media_type"], Path(p["path"]))
            self.log.line(index, f"published artifact {out['name']} ({p['kind']}, {out['size']} bytes) {out['digest']}")
            digests.append(out["digest"])
        self.outputs["artifacts"] = digests

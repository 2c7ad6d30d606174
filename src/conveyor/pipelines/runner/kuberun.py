"""One claimed run on the Kubernetes executor: the run of ``execute.py`` with its steps in a pod.

Everything but the steps is the podman executor's: the runner checks the commit out on its own host
(over git with the run's token), parses the pipeline from it, reports steps and logs through the same
``RunnerClient`` and masks with the same ``Masker``. Then the whole run becomes one pod
(``kubepod.py``), created before the first step: steps are its init containers, so they run one
after another. A ``needs:`` DAG therefore runs in one topological order, and its first failure ends
the run (the podman executor would still run the steps independent of the failed one).

Refused here, each with its rule, rather than run somewhere else than the user thinks: built-in
tasks (``uses:``: Conveyor's own code, run by the podman executor as processes of the runner, with
buildah for image builds; none of that is in a step's pod) and ``host: true`` steps.

Image builds in a pod are possible on these clusters, measured with a throwaway probe (a pod of an
image holding the host's buildah 1.28 and its libraries, ``buildah --storage-driver vfs bud
--isolation chroot`` of ``FROM <Conveyor's registry>/cache/shell:1`` + ``RUN``): the build and its
``RUN`` line passed in a privileged container, with only SYS_ADMIN added, and with the default
capabilities and no seccomp filter (the local clusters' default). Not probed: under the
``RuntimeDefault`` seccomp filter this executor sets, which blocks the namespaces chroot isolation
makes without SYS_ADMIN. What is missing is the task itself in the pod: ``image-build`` is
Conveyor's code (cache, annotations, push with the run token, the result the publish step signs),
so it needs Conveyor's ``runner`` image (``conveyor.images``) as the step's image, and is not done.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from conveyor.pipelines.process import Outcome
from conveyor.pipelines.runner.client import RunnerClient
from conveyor.pipelines.runner.execute import Control, RunExecution, RunnerSettings, StepFailed
from conveyor.pipelines.runner.kubepod import SOURCE_LIMIT, PodStep, RunPod, step_container
from conveyor.pipelines.runner.kubernetes import KubeError, KubeTarget, PodSession
from conveyor.pipelines.runner.plan import Plan, StepState
from conveyor.pipelines.runner.podman import StepRefused, resolve_image
from conveyor.pipelines.spec import AppSpec, PipelineSpec, StepSpec


def topological(steps: list[StepSpec]) -> list[StepSpec]:
    """File order for plain pipelines; for a DAG, the order its plan starts steps in when all pass."""
    if not any(s.needs for s in steps):
        return list(steps)
    plan, out = Plan(list(steps), True), []
    while not plan.finished:
        i = plan.ready(1)[0]
        plan.start(i)
        plan.finish(i, StepState.SUCCESS)
        out.append(steps[i])
    return out


def refusal(spec: StepSpec, workspace: Path) -> str | None:
    """Why a step cannot run on this executor, naming the rule (None: it can)."""
    if spec.kind == "uses":
        return (f"built-in task '{spec.task}' does not run on the Kubernetes executor (tasks and image builds "
                "run on podman runners; send this pipeline to one with runs-on; rule pipeline.kubernetes-tasks)")
    if spec.host:
        return "host: true steps do not run on the Kubernetes executor (rule pipeline.kubernetes-host)"
    wd = (workspace / spec.working_directory).resolve()
    if not wd.is_relative_to(workspace.resolve()) or not wd.is_dir():
        return f"working_directory '{spec.working_directory}' is not a directory in the repository"
    return None


def pack(workspace: Path) -> bytes:
    """The checkout as a gzipped tar (what the pod's ``checkout`` container unpacks)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(workspace.iterdir()):
            tar.add(path, arcname=path.name)
    return buf.getvalue()


class KubeRunExecution(RunExecution):
    def __init__(self, client: RunnerClient, settings: RunnerSettings, claim: dict[str, Any], control: Control,
                 target: KubeTarget) -> None:
        super().__init__(client, settings, claim, control)
        self.target = target
        self.pod: PodSession | None = None
        self._source = b""
        self._in_pod: set[int] = set()

    def _open(self) -> None:
        """No network of the runner's: the pod is on the cluster's network."""

    def _close(self) -> None:
        if self.pod is not None:
            self.pod.delete()
            self.pod.close()

    def _setup(self, index: int) -> tuple[PipelineSpec, AppSpec | None]:
        spec, app = super()._setup(index)
        self._source = pack(self.ws)
        if len(self._source) > SOURCE_LIMIT:
            msg = (f"the source is {len(self._source) // 1024} KiB compressed; the Kubernetes executor carries "
                   f"at most {SOURCE_LIMIT // 1024} KiB into the pod (rule pipeline.kubernetes-source-size)")
            self.client.update_step(self.run_id, index, state="failure", message=msg)
            self.log.line(index, f"error: {msg}")
            raise StepFailed("setup", msg)
        return spec, app

    def _order(self, spec: PipelineSpec) -> tuple[list[StepSpec], bool, int]:
        return topological(spec.steps), False, 1

    def _prepare(self, base: int, steps: list[StepSpec]) -> None:
        """Create the run's pod with every step up to the first that cannot run (that one fails when its
        turn comes, with its reason; the steps after it are skipped)."""
        pod_steps = []
        for i, s in enumerate(steps):
            if refusal(s, self.ws) is not None:
                break
            try:
                env = self._env(s)
            except KeyError:
                break
            image = resolve_image(s.image or self.settings.default_image, self.target.pod_registry)
            pod_steps.append(PodStep(base + i, s, image, env))
        run = RunPod(run_id=self.run_id, runner=self.settings.name, instance=self.settings.instance,
                     server=self.settings.server, namespace=self.target.namespace,
                     registry=self.target.pod_registry, token=self.token,
                     checkout_image=resolve_image(self.settings.default_image, self.target.pod_registry))
        if steps and any(s.needs for s in steps):
            self.log.line(base - 1, "the Kubernetes executor runs the steps one after another: "
                          + ", ".join(s.name for s in steps))
        self.pod = PodSession(self.target, run)
        try:
            self.pod.create(pod_steps, self._source)
        except (KubeError, httpx.HTTPError) as exc:
            self.log.line(base - 1, f"error: the run's pod could not be created: {exc}")
            raise StepFailed(None, f"the run's pod could not be created: {exc}", "error") from None
        self._in_pod = {p.index for p in pod_steps}
        self.log.line(base - 1, f"pod {run.namespace}/{run.name} created")

    def _env(self, spec: StepSpec) -> dict[str, str]:
        env = super()._env(spec)
        for key in ("PATH", "HOME", "LANG"):  # the runner host's: the image has its own
            env.pop(key, None)
        env["CONVEYOR_SERVER"] = self.target.pod_server
        env["CONVEYOR_REGISTRY"] = self.target.pod_registry
        return env

    def _run(self, index: int, spec: StepSpec, env: dict[str, str], sink: Callable[[str], None]) -> Outcome:
        why = refusal(spec, self.ws)
        if why is not None:
            raise StepRefused(why)
        if self.pod is None or index not in self._in_pod:
            return Outcome(None, "start-failed", "the step is not in the run's pod")
        return self.pod.follow(step_container(index), spec.timeout, sink=sink, mask=self.masker,
                               should_cancel=self.control.stop_requested, max_output=self.settings.max_log_bytes,
                               tick=self.log.maybe_flush)

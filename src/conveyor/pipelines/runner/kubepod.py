"""The objects one run becomes on the Kubernetes executor: a Secret and a Pod (pure data, no API calls).

Why one pod per run, its steps as init containers: init containers run one after another, in order,
each to its end, and a failing one stops the pod — exactly the sequential meaning of a pipeline, with
the workspace an ``emptyDir`` every container of the pod shares, on any cluster (one pod per step
would need a volume that outlives a pod and follows the next one to its node: a ReadWriteMany PVC or
a hostPath pinned to one node). The runner follows each container's log while it runs and reads its
exit code from the pod's status, so steps are reported one by one as on the podman executor.

The first init container, ``checkout``, unpacks the run's source into the workspace: a gzipped tar
of the commit the runner checked out itself (it parses the pipeline file from it anyway), carried
in the run's Secret. That needs nothing in the cluster but the step image's ``sh``, ``gzip`` and
``tar`` (no git-capable image, no route to the forge for git), at the price of a size limit: a
Secret holds at most 1 MiB, so sources over ``SOURCE_LIMIT`` compressed are refused (rule
``pipeline.kubernetes-source-size``).

What a step's container holds: the workspace at ``/workspace``, a home of its own, and its
environment taken from the run's Secret (``secretKeyRef``: no value — not the run token, not a
pipeline secret — is written into the pod's spec, which anyone who may list pods can read). The pod
mounts no service-account token (``automountServiceAccountToken: false``) and gets no service
links: the run token is the only credential inside. Its containers get the runtime's default seccomp
filter, as podman's do.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from conveyor.pipelines.spec import StepSpec

SOURCE_LIMIT = 700 * 1024  # compressed bytes; base64 in the Secret makes ~950 KiB of the 1 MiB limit
LABEL_PREFIX = "conveyor.dev"
WORKSPACE = "/workspace"
HOME = "/conveyor/home"
CHECKOUT = "checkout"
SLACK_SECONDS = 600  # image pulls and the checkout, on top of the steps' own timeouts


def server_key(server: str) -> str:
    """A label value naming the Conveyor server a runner serves (two servers may share a cluster)."""
    return hashlib.sha256(server.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class PodStep:
    """One step as a container of the run's pod."""

    index: int
    spec: StepSpec
    image: str  # resolved: registry/repository:tag as the node pulls it
    env: dict[str, str]

    @property
    def container(self) -> str:
        return step_container(self.index)


def step_container(index: int) -> str:
    return f"step-{index}"


@dataclass(frozen=True)
class RunPod:
    """Who and what: the pod's identity, where it goes, what it pulls and with which credentials."""

    run_id: int
    runner: str
    instance: str
    server: str  # the server's URL as the runner knows it (its hash labels the objects)
    namespace: str
    registry: str  # host:port of Conveyor's registry as the cluster's nodes pull from it
    token: str  # the run's token: registry pulls and the steps' CONVEYOR_TOKEN
    checkout_image: str

    @property
    def name(self) -> str:
        return f"conveyor-run-{self.run_id}-{self.instance[:12]}"

    @property
    def pull_secret(self) -> str:
        return f"{self.name}-pull"

    def labels(self) -> dict[str, str]:
        return {f"{LABEL_PREFIX}/runner": self.runner[:63], f"{LABEL_PREFIX}/instance": self.instance[:63],
                f"{LABEL_PREFIX}/server": server_key(self.server), f"{LABEL_PREFIX}/run": str(self.run_id)}

    def meta(self, name: str) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace, "labels": self.labels()}


def env_key(index: int, n: int) -> str:
    return f"step-{index}-env-{n}"


def secrets(run: RunPod, steps: list[PodStep], source: bytes) -> list[dict[str, Any]]:
    """The run's Secret (source archive, every step's environment) and its image pull secret."""
    data = {"source.tar.gz": base64.b64encode(source).decode()}
    for step in steps:
        for n, value in enumerate(step.env.values()):
            data[env_key(step.index, n)] = base64.b64encode(value.encode()).decode()
    auth = base64.b64encode(f"token:{run.token}".encode()).decode()
    docker = json.dumps({"auths": {run.registry: {"auth": auth}}})
    return [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": run.meta(run.name), "data": data},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
         "metadata": run.meta(run.pull_secret),
         "data": {".dockerconfigjson": base64.b64encode(docker.encode()).decode()}},
    ]


def _mounts() -> list[dict[str, Any]]:
    return [{"name": "workspace", "mountPath": WORKSPACE}, {"name": "home", "mountPath": HOME}]


def _container(run: RunPod, step: PodStep) -> dict[str, Any]:
    wd = step.spec.working_directory.strip("/") or "."
    env: list[dict[str, Any]] = [{"name": "HOME", "value": HOME}]
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": run.name, "key": env_key(step.index, n)}}}
            for n, key in enumerate(step.env)]
    out: dict[str, Any] = {
        "name": step.container, "image": step.image, "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-e", "-c", step.spec.script],
        "workingDir": WORKSPACE if wd == "." else f"{WORKSPACE}/{wd}",
        "env": env, "volumeMounts": _mounts(),
    }
    if step.spec.resources:
        out["resources"] = {k: dict(v) for k, v in step.spec.resources.items()}
    return out


def pod(run: RunPod, steps: list[PodStep]) -> dict[str, Any]:
    """The run's pod: ``checkout`` then the steps as init containers, in order; a no-op main container."""
    unpack = f"cd {WORKSPACE} && gzip -dc /conveyor/source/source.tar.gz | tar -xf -"
    checkout = {"name": CHECKOUT, "image": run.checkout_image, "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-e", "-c", unpack], "volumeMounts": [
                    *_mounts(), {"name": "source", "mountPath": "/conveyor/source", "readOnly": True}]}
    deadline = SLACK_SECONDS + sum(s.spec.timeout for s in steps)
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": run.meta(run.name),
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            # As podman does for its containers: the runtime's default seccomp filter, whatever the
            # cluster's default (Kubernetes' own is Unconfined unless the kubelet sets SeccompDefault).
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "activeDeadlineSeconds": deadline,
            "terminationGracePeriodSeconds": 5,
            "imagePullSecrets": [{"name": run.pull_secret}],
            "initContainers": [checkout, *(_container(run, s) for s in steps)],
            "containers": [{"name": "done", "image": run.checkout_image, "imagePullPolicy": "IfNotPresent",
                            "command": ["/bin/sh", "-c", "true"]}],
            "volumes": [
                {"name": "workspace", "emptyDir": {}},
                {"name": "home", "emptyDir": {}},
                {"name": "source", "secret": {"secretName": run.name, "items": [
                    {"key": "source.tar.gz", "path": "source.tar.gz"}]}},
            ],
        },
    }

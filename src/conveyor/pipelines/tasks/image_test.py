"""``image-test``: run a command inside the image built by ``image-build``, with podman."""

from __future__ import annotations

from conveyor.core.containers import podman
from conveyor.pipelines.tasks.context import TaskContext, fail, run_tool


def main(ctx: TaskContext) -> None:
    image = ctx.outputs.get("image")
    if not image:
        fail("image-test needs an image-build step before it")
    command = str(ctx.params["command"])
    argv = podman("run", "--rm", "--name", ctx.container_name, "--network", "none", "--pull", "never",
                  root=ctx.storage_root)
    for key, value in (ctx.params.get("env") or {}).items():
        argv += ["--env", f"{key}={value}"]
    argv += ["--entrypoint", "/bin/sh", image["id"], "-c", command]
    code, _ = run_tool(argv)
    if code != 0:
        fail(f"the test command exited with {code} in the image")

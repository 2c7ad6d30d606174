"""``image-build``: buildah builds the Dockerfile (no daemon) with a layer cache shared by runs.

The image is only built here. When ``push`` is on (the default in ``ci``, off in ``pr``), the push
is recorded for the end of the run and done by the ``publish`` step once every step has passed,
so a failed run never pushes anything.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from dockerfile_parse import DockerfileParser

from conveyor.core.containers import buildah, skopeo
from conveyor.pipelines.tasks.context import TaskContext, fail, last_error, run_tool, say

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"


def local_name(ctx: TaskContext) -> str:
    return f"localhost/conveyor-run-{ctx.run_id}:build"


def layer_cache(ctx: TaskContext, image: str, external: object) -> list[str]:
    """Layers shared across runs and runners through the registry (``<app image>/buildcache``), besides
    the runner's own storage: every run reads it; only deployable CI runs — whose token may push under
    the app's repository — write it, so a pull request can never poison what the next build reuses."""
    if external or not ctx.params.get("layer_cache", True):
        return []
    cache = f"{ctx.registry}/{image}/buildcache"
    flags = ["--cache-from", cache]
    if ctx.deployable and ctx.pipeline == "ci":
        flags += ["--cache-to", cache]
    return flags


def final_base(dockerfile: Path, build_args: dict[str, str]) -> str | None:
    """The image the Dockerfile's last stage is built on, with its ``ARG``s substituted and stage names
    followed (``FROM build`` -> what stage ``build`` is ``FROM``); None for ``scratch``."""
    parser = DockerfileParser(path=str(dockerfile), build_args=build_args, env_replace=True)
    parents = parser.parent_images
    stages: dict[str, str] = {}
    froms = [i["value"].split() for i in parser.structure if i["instruction"] == "FROM"]
    for words, image in zip(froms, parents, strict=False):
        if len(words) >= 3 and words[-2].lower() == "as":
            stages[words[-1]] = image
    image = parents[-1] if parents else None
    seen: set[str] = set()
    while image in stages and image not in seen:
        seen.add(image)
        image = stages[image]
    return None if image in (None, "scratch") else image


def base_annotations(ctx: TaskContext, dockerfile: Path, build_args: dict[str, str]) -> list[str]:
    """The base image's name and digest as this registry serves them, set explicitly.

    buildah 1.28 writes ``org.opencontainers.image.base.name``/``.digest`` itself, but from its local
    storage: measured in tests/registry/test_supply_chain.py, an image built ``FROM cache/other:1``
    was annotated ``cache/shell:1`` because both tags named the same local image, and the digest was
    the one of buildah's stored copy, which this registry never held. The name the Dockerfile asks for
    and the digest its tag has right before the build (``--pull=always`` pulls it next) are what
    lineage needs; a base in another registry, or one that cannot be read, keeps buildah's values."""
    try:
        base = final_base(dockerfile, build_args)
    except Exception as exc:  # noqa: BLE001 - a Dockerfile buildah accepts may still puzzle the parser
        say(f"base image: not resolved ({exc}); buildah's own annotations are kept")
        return []
    if base is None or not base.startswith(f"{ctx.registry}/") or "@" in base:
        return []
    p = subprocess.run(skopeo("inspect", "--raw", "--tls-verify=false", "--authfile",
                              str(ctx.result_path.parent / "auth.json"), f"docker://{base}"),
                       capture_output=True, timeout=300)
    if p.returncode != 0:
        return []
    digest = "sha256:" + hashlib.sha256(p.stdout).hexdigest()
    say(f"base image: {base} ({digest})")
    return ["--annotation", f"{BASE_NAME}={base}", "--annotation", f"{BASE_DIGEST}={digest}"]


def main(ctx: TaskContext) -> None:
    app = ctx.need_app()
    dockerfile_rel = ctx.params.get("dockerfile") or app.dockerfile
    context_rel = ctx.params.get("context") or app.context
    dockerfile = ctx.path(dockerfile_rel, "dockerfile")
    context_dir = ctx.path(context_rel, "build context")
    if not dockerfile.is_file():
        fail(f"Dockerfile not found: {dockerfile_rel}")
    if not context_dir.is_dir():
        fail(f"build context not found: {context_rel}")
    push = bool(ctx.params.get("push", ctx.pipeline == "ci"))
    if push and ctx.pipeline != "ci":
        say("push: ignored outside the ci pipeline (unmerged code is never pushed)")
        push = False
    external = ctx.params.get("registry")
    if push and not external and not ctx.deployable:
        say("push: not done: this CI run is not of a commit on the protected default branch, so it produces no "
            "deployable image (rule run.not-deployable)")
        push = False
    registry = external or ctx.registry
    repository = f"{registry}/{app.image}"
    tags = [f"{app.version}-{ctx.build_number}", ctx.commit]
    iidfile = ctx.result_path.with_suffix(".iid")
    argv = buildah("bud", "--layers", "--iidfile", str(iidfile), "-f", str(dockerfile), "-t", local_name(ctx),
                   # Labels that change with every commit would defeat the layer cache for the last
                   # layer; the commit is recorded by the tag instead.
                   "--label", f"org.opencontainers.image.version={app.version}", root=ctx.storage_root)
    # Base images come from this Conveyor's registry (plain HTTP on loopback) with the run's token; the
    # Dockerfile's RUN lines get the run's network, which reaches this Conveyor and nothing else.
    # --pull=always: a base whose tag moved (a security update) is pulled again, not taken from the
    # runner's storage (with buildah 1.28's --pull=newer a security rebuild reused the stale local base
    # and produced the very same image; tests/registry/test_supply_chain.py).
    argv += ["--pull=always", "--tls-verify=false", "--authfile", str(ctx.result_path.parent / "auth.json"),
             "--network", ctx.network]
    build_args = {key: ctx.expand(str(value)) for key, value in (ctx.params.get("build_args") or {}).items()}
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    argv += base_annotations(ctx, dockerfile, build_args)
    argv += layer_cache(ctx, app.image, external)
    argv.append(str(context_dir))
    code, tail = run_tool(argv)
    if code != 0:
        fail(f"image build failed: {last_error(tail)}")
    image_id = iidfile.read_text().strip()
    say(f"built {local_name(ctx)} ({image_id})")
    if push:
        say(f"will push {repository} as {', '.join(tags)} when every step has passed")
    else:
        say("push: false — the image is not pushed")
    ctx.result = {"outputs": {"image": {"local": local_name(ctx), "id": image_id, "repository": repository,
                                        "tags": tags, "push": push, "external": bool(external),
                                        "credentials_secret": ctx.params.get("credentials_secret"),
                                        "tls_verify": ctx.params.get("tls_verify", bool(external))}}}

"""The ``publish`` step (added by the engine when a run has something to publish): push the image
under both tags. It runs only after every other step has passed."""

from __future__ import annotations

import subprocess

from conveyor.core.containers import buildah, skopeo
from conveyor.pipelines.tasks.context import TaskContext, fail, last_error, run_tool, say


def _creds(ctx: TaskContext, image: dict[str, object]) -> str:
    secret = image.get("credentials_secret")
    if image.get("external"):
        if not secret:
            fail("pushing to an external registry needs with: credentials_secret")
        value = ctx.secrets.get(str(secret))
        if not value or ":" not in value:
            fail(f"secret '{secret}' must hold USER:PASSWORD for the external registry")
        return value
    return f"{ctx.registry_user}:{ctx.registry_token}"


def _digest_of(ref: str, creds: str, tls: bool) -> str:
    p = subprocess.run(skopeo("inspect", f"--tls-verify={'true' if tls else 'false'}", "--creds", creds,
                              "--format", "{{.Digest}}", f"docker://{ref}"),
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        fail(f"cannot inspect {ref}: {p.stderr.strip()[:300]}")
    return p.stdout.strip()


def main(ctx: TaskContext) -> None:
    image = ctx.outputs.get("image")
    if not image or not image.get("push"):
        say("nothing to push")
        return
    creds = _creds(ctx, image)
    tls = bool(image.get("tls_verify"))
    tls_flag = f"--tls-verify={'true' if tls else 'false'}"
    repository, tags = str(image["repository"]), [str(t) for t in image["tags"]]
    hidden = creds.partition(":")[0] + ":***"
    digestfile = ctx.result_path.with_suffix(".digest")
    first = f"{repository}:{tags[0]}"
    argv = buildah("push", tls_flag, "--creds", creds, "--digestfile", str(digestfile), str(image["id"]),
                   f"docker://{first}", root=ctx.storage_root)
    code, tail = run_tool(argv, show=[hidden if a == creds else a for a in argv])
    if code != 0:
        fail(f"push of {first} failed: {last_error(tail)}")
    digest = digestfile.read_text().strip()
    for tag in tags[1:]:
        # Copy the pushed manifest byte for byte, so every tag names the same digest.
        argv = skopeo("copy", "--quiet", f"--src-{tls_flag[2:]}", f"--dest-{tls_flag[2:]}", "--src-creds", creds,
                      "--dest-creds", creds, f"docker://{repository}@{digest}", f"docker://{repository}:{tag}")
        code, tail = run_tool(argv, show=[hidden if a == creds else a for a in argv])
        if code != 0:
            fail(f"tagging {repository}:{tag} failed: {last_error(tail)}")
    for tag in tags:
        found = _digest_of(f"{repository}:{tag}", creds, tls)
        if found != digest:
            fail(f"{repository}:{tag} resolves to {found}, not the pushed {digest}")
        say(f"pushed {repository}:{tag} -> {digest}")
    ctx.result = {"outputs": {"image": {**image, "digest": digest, "pushed": True}}}

"""The ``publish`` step (added by the engine when a run has something to publish): push the image
under both tags and attach its SBOM. It runs only after every other step has passed; the runner then
asks the server to sign the pushed digest (``runner/execute.py``).

A rebuild of a commit that was built before (a base-image security update, a retry) gets a new digest:
its ``<version>-<build>`` tag is new, while the commit's tag already names the first build of that
commit and, as a release tag, never moves, so it is left as it is."""

from __future__ import annotations

import json
import subprocess

from conveyor.core.containers import buildah, skopeo
from conveyor.pipelines.tasks import sbom
from conveyor.pipelines.tasks.context import TaskContext, fail, last_error, run_tool, say
from conveyor.registry.client import RegistryClientError
from conveyor.registry.lineage import BASE_DIGEST, BASE_NAME


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


def _digest_of(ref: str, creds: str, tls: bool, missing_ok: bool = False) -> str:
    p = subprocess.run(skopeo("inspect", f"--tls-verify={'true' if tls else 'false'}", "--creds", creds,
                              "--format", "{{.Digest}}", f"docker://{ref}"),
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        if missing_ok and ("manifest unknown" in p.stderr.lower() or "not found" in p.stderr.lower()):
            return ""
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
    for tag in list(tags[1:]):
        if tag == ctx.commit and (earlier := _digest_of(f"{repository}:{tag}", creds, tls, missing_ok=True)) \
                and earlier != digest:
            say(f"{repository}:{tag} already names an earlier build of this commit ({earlier}); kept")
            tags.remove(tag)
            continue
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
    sbom_digest = _attach_sbom(ctx, image, repository, digest, tls)
    ctx.result = {"outputs": {"image": {**image, "tags": tags, "digest": digest, "pushed": True,
                                        "sbom": sbom_digest, "base": _base_of(repository, digest, creds, tls)}}}


def _base_of(repository: str, digest: str, creds: str, tls: bool) -> dict[str, str] | None:
    """The base image buildah recorded in the pushed manifest's annotations (its lineage)."""
    p = subprocess.run(skopeo("inspect", "--raw", f"--tls-verify={'true' if tls else 'false'}", "--creds", creds,
                              f"docker://{repository}@{digest}"), capture_output=True, text=True, timeout=300)
    try:
        notes = (json.loads(p.stdout).get("annotations") or {}) if p.returncode == 0 else {}
    except ValueError:
        notes = {}
    name, base = notes.get(BASE_NAME), notes.get(BASE_DIGEST)
    return {"name": name, "digest": base} if name and base else None


def _attach_sbom(ctx: TaskContext, image: dict[str, object], repository: str, digest: str, tls: bool) -> str | None:
    if image.get("external"):
        return None  # another registry: its own tools attach what it wants
    host, _, repo = repository.partition("/")
    try:
        doc = sbom.from_image(str(image["id"]), ctx.storage_root, repo, digest)
        ref = sbom.attach_sync(host, ctx.registry_token, repo, digest, doc, tls)
    except (subprocess.CalledProcessError, OSError, RegistryClientError) as exc:
        fail(f"attaching the SBOM of {repository}@{digest} failed: {exc}")
    count = len(json.loads(doc).get("components", []))
    say(f"attached the SBOM of {repository}@{digest} ({count} packages, CycloneDX) as referrer {ref}")
    return ref

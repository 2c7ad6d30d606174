"""``conveyor registry``: tags, locks, immutable tags, anonymous pull, upstreams, import, GC."""

from __future__ import annotations

import asyncio

import typer

from conveyor.core import client
from conveyor.core.client import fail, request, say
from conveyor.registry.names import split_reference, valid_name, valid_tag

registry_app = typer.Typer(help="The container registry (served at /v2 on the server's port).",
                           no_args_is_help=True)
immutable_app = typer.Typer(help="Tag patterns that can never be moved or deleted.", no_args_is_help=True)
anonymous_app = typer.Typer(help="Repository prefixes anyone may pull without credentials.", no_args_is_help=True)
upstream_app = typer.Typer(help="Pull-through caches of other registries.", no_args_is_help=True)
registry_app.add_typer(immutable_app, name="immutable")
registry_app.add_typer(anonymous_app, name="anonymous")
registry_app.add_typer(upstream_app, name="upstream")


def _repo_tag(ref: str) -> tuple[str, str]:
    repo, sep, tag = ref.rpartition(":")
    if not sep or not valid_name(repo) or not valid_tag(tag):
        fail(f"expected REPOSITORY:TAG, got '{ref}'")
    return repo, tag


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


@registry_app.command("repos")
def repos() -> None:
    """List repositories."""
    for r in request("GET", "/api/v1/registry/repositories"):
        say(f"{r['name']}\t{r['tags']} tag(s)")


@registry_app.command("tags")
def tags(repository: str = typer.Argument(..., help="The repository")) -> None:
    """List a repository's tags with their digests and locks."""
    for t in request("GET", "/api/v1/registry/tags", params={"repository": repository}):
        lock = f"\tlocked by {t['locked_by']}" if t["locked"] else ""
        say(f"{t['name']}\t{t['digest']}\t{t['updated_by']}{lock}")


@registry_app.command("lock")
def lock(reference: str = typer.Argument(..., metavar="REPOSITORY:TAG", help="The tag to lock")) -> None:
    """Lock a tag: pushing over it or deleting it is refused until it is unlocked."""
    repo, tag = _repo_tag(reference)
    out = request("POST", "/api/v1/registry/locks", json_body={"repository": repo, "tag": tag})
    say(f"locked {repo}:{tag} at {out['digest']}")


@registry_app.command("unlock")
def unlock(reference: str = typer.Argument(..., metavar="REPOSITORY:TAG", help="The locked tag")) -> None:
    """Unlock a tag: it may be pushed over or deleted again."""
    repo, tag = _repo_tag(reference)
    request("DELETE", "/api/v1/registry/locks", params={"repository": repo, "tag": tag})
    say(f"unlocked {repo}:{tag}")


@registry_app.command("locks")
def locks() -> None:
    """The locked tags: digest, who locked each and when."""
    for r in request("GET", "/api/v1/registry/locks"):
        say(f"{r['repository']}:{r['tag']}\t{r['digest']}\tlocked by {r['locked_by']} at {r['locked_at']}")


@immutable_app.command("add")
def immutable_add(
    repository: str = typer.Argument(..., help="A repository (its tags and those of the repositories below it)"),
    pattern: str = typer.Argument(..., help="A tag glob, e.g. 'v*'"),
) -> None:
    """Make tags matching the glob PATTERN in REPOSITORY (and below it) immutable."""
    out = request("POST", "/api/v1/registry/immutable-tags", json_body={"repository": repository, "pattern": pattern})
    say(f"tags '{out['pattern']}' of {out['repository']} are immutable")


@immutable_app.command("remove")
def immutable_remove(
    repository: str = typer.Argument(..., help="A repository (its tags and those of the repositories below it)"),
    pattern: str = typer.Argument(..., help="A tag glob, e.g. 'v*'"),
) -> None:
    """Remove an immutable-tag rule: matching tags may move again."""
    request("DELETE", "/api/v1/registry/immutable-tags", params={"repository": repository, "pattern": pattern})
    say(f"removed '{pattern}' on {repository}")


@immutable_app.command("list")
def immutable_list() -> None:
    """The immutable-tag rules: repository and tag glob."""
    for r in request("GET", "/api/v1/registry/immutable-tags"):
        say(f"{r['repository']}\t{r['pattern']}")


@anonymous_app.command("add")
def anonymous_add(prefix: str = typer.Argument(..., help="A repository prefix, e.g. 'public'")) -> None:
    """Allow anonymous pulls of PREFIX and every repository below it."""
    request("POST", "/api/v1/registry/anonymous-prefixes", json_body={"prefix": prefix})
    say(f"anonymous pull allowed under '{prefix}'")


@anonymous_app.command("remove")
def anonymous_remove(prefix: str = typer.Argument(..., help="A prefix from `anonymous list`")) -> None:
    """Require credentials again to pull under PREFIX."""
    request("DELETE", "/api/v1/registry/anonymous-prefixes", params={"prefix": prefix})
    say(f"anonymous pull no longer allowed under '{prefix}'")


@anonymous_app.command("list")
def anonymous_list() -> None:
    """The prefixes anyone may pull without credentials."""
    for p in request("GET", "/api/v1/registry/anonymous-prefixes"):
        say(p)


@upstream_app.command("add")
def upstream_add(
    prefix: str = typer.Argument(..., help="The local repository prefix, e.g. 'cache'"),
    url: str = typer.Argument(..., help="The upstream registry's URL"),
    creds: str = typer.Option(None, "--creds", help="USER:PASSWORD for the upstream"),
) -> None:
    """Serve PREFIX/... as a pull-through cache of the registry at URL."""
    body: dict[str, str | None] = {"prefix": prefix, "url": url}
    if creds:
        user, sep, password = creds.partition(":")
        if not sep:
            fail("--creds must be USER:PASSWORD")
        body.update(username=user, password=password)
    out = request("POST", "/api/v1/registry/upstreams", json_body=body)
    say(f"{out['prefix']}/... now mirrors {out['url']}")


@upstream_app.command("list")
def upstream_list() -> None:
    """The pull-through caches: prefix, upstream URL, user."""
    for u in request("GET", "/api/v1/registry/upstreams"):
        user = f"\tas {u['username']}" if u["username"] else ""
        say(f"{u['prefix']}\t{u['url']}{user}")


@upstream_app.command("remove")
def upstream_remove(prefix: str = typer.Argument(..., help="A prefix from `upstream list`")) -> None:
    """Stop mirroring an upstream under PREFIX (what was cached stays)."""
    request("DELETE", "/api/v1/registry/upstreams", params={"prefix": prefix})
    say(f"removed upstream '{prefix}'")


@registry_app.command("gc")
def garbage_collect(
    dry_run: bool = typer.Option(False, "--dry-run", help="only report what would be removed"),
    grace: float = typer.Option(3600.0, "--grace", help="keep anything used within this many seconds"),
) -> None:
    """Remove unreferenced manifests and blobs (safe while the registry serves)."""
    out = request("POST", "/api/v1/registry/gc", json_body={"dry_run": dry_run, "grace_seconds": grace})
    verb = "would free" if out["dry_run"] else "freed"
    for m in out["manifests"]:
        say(f"manifest {m['repository']}@{m['digest']} ({_human(m['size'])})")
    for b in out["blobs"]:
        say(f"blob {b['digest']} ({_human(b['size'])})")
    for d in out["orphan_files"]:
        say(f"orphan file {d}")
    for u in out["uploads"]:
        say(f"abandoned upload {u}")
    say(f"{verb} {len(out['manifests'])} manifest(s), {len(out['blobs'])} blob(s), "
        f"{_human(out['bytes_freed'])} ({out['bytes_freed']} bytes)")


@registry_app.command("import")
def import_image(
    source: str = typer.Argument(..., help="docker://HOST/REPO[:TAG], oci:DIR[:REF] or oci-archive:FILE[:REF]"),
    dest: str = typer.Argument(..., help="REPOSITORY[:TAG] in Conveyor"),
    src_creds: str = typer.Option(None, "--src-creds", help="USER:PASSWORD for a docker:// source"),
    src_insecure: bool = typer.Option(False, "--src-insecure", help="plain HTTP for a docker:// source"),
    refresh_every: str = typer.Option(None, "--refresh-every", help="docker:// only: re-import the tag every "
                                                                     "interval (e.g. 1d), keeping the old digest"),
) -> None:
    """Copy an image from another registry or an OCI layout/archive into Conveyor."""
    from conveyor.registry import importer
    from conveyor.registry.client import RegistryClient, RegistryClientError

    repo, tag = split_reference(dest)
    if not valid_name(repo) or not valid_tag(tag):
        fail(f"invalid destination '{dest}'")
    user = password = None
    if src_creds:
        user, _, password = src_creds.partition(":")

    async def run() -> str:
        src, ref = importer.open_source(source, user, password, insecure=src_insecure)
        dst = RegistryClient(client.server_url(), bearer=client.token(), timeout=300)
        try:
            return await importer.copy(src, ref, dst, repo, tag)
        finally:
            await src.close()
            await dst.close()

    try:
        digest = asyncio.run(run())
    except (importer.ImportError_, RegistryClientError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"import failed: {exc}")
    say(f"imported {source} as {repo}:{tag} ({digest})")
    if refresh_every:
        if not source.startswith("docker://"):
            fail("--refresh-every needs a docker:// source")
        src_repo = source.rsplit("@", 1)[0]
        if ":" in src_repo.rsplit("/", 1)[-1]:
            src_repo = src_repo.rsplit(":", 1)[0]
        refresh_import(repo, src_repo, every=refresh_every, tags=tag, src_creds=src_creds, src_insecure=src_insecure)


keys_app = typer.Typer(help="The installation's image signing keys (CI signs every image it pushes).",
                       no_args_is_help=True)
refresh_app = typer.Typer(help="Keep cached third-party repositories current.", no_args_is_help=True)
registry_app.add_typer(keys_app, name="signing-key")
registry_app.add_typer(refresh_app, name="refresh")


def _seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return int(float(value[:-1]) * units[value[-1]]) if value[-1] in units else int(value)
    except (ValueError, IndexError):
        fail(f"'{value}' is not a duration (e.g. 30m, 6h, 1d)")


@keys_app.command("list")
def keys_list() -> None:
    """Public keys: `conveyor registry signing-key list --pem > cosign.pub` for `cosign verify --key`."""
    for k in request("GET", "/api/v1/registry/signing-keys"):
        say(f"{k['key_id']}\t{k['state']}\tcreated {k['created_at']}")


@keys_app.command("public")
def keys_public() -> None:
    """The active public key as PEM (what `cosign verify --key` takes)."""
    for k in request("GET", "/api/v1/registry/signing-keys"):
        if k["state"] == "active":
            say(k["public_key"].rstrip())


@keys_app.command("rotate")
def keys_rotate() -> None:
    """A new active key; the old one is retired (still trusted for what it signed)."""
    out = request("POST", "/api/v1/registry/signing-keys/rotate")
    say(f"active signing key now {out['key_id']}")


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="A retired key's id (from `signing-key list`)")) -> None:
    """Distrust a retired key: images only it signed fail verification from now on."""
    out = request("POST", f"/api/v1/registry/signing-keys/{key_id}/revoke")
    say(f"revoked {out['key_id']}")


@registry_app.command("lineage")
def lineage(image: str = typer.Argument(..., metavar="IMAGE", help="REPO, REPO:TAG or REPO@DIGEST")) -> None:
    """What IMAGE was built on, what was built on it, and which environments run an outdated base."""
    out = request("GET", "/api/v1/registry/lineage", params={"image": image})
    for e in out["built_on"]:
        b = e["base"]
        state = f"outdated: {b['name']} is now {b['current_digest']}" if b["outdated"] else "current"
        runs = f"\truns in {', '.join(e['running_in'])}" if e["running_in"] else ""
        say(f"{e['repository']}@{e['digest']} ({', '.join(e['tags']) or 'untagged'}) built on "
            f"{b['name']}@{b['digest']} [{state}]{runs}")
    for e in out["built_from_it"]:
        b = e["base"]
        runs = f"\truns in {', '.join(e['running_in'])}" if e["running_in"] else ""
        say(f"  <- {e['repository']}@{e['digest']} ({', '.join(e['tags']) or 'untagged'}) built on "
            f"{b['digest']}{' [outdated]' if b['outdated'] else ''}{runs}")
    if not out["built_on"] and not out["built_from_it"]:
        say(f"no lineage recorded for {image}")
    for o in out["outdated_running"]:
        say(f"OUTDATED: {o['where']} runs {o['repository']}@{o['digest']}, built on {o['base']}@{o['base_digest']} "
            f"(now {o['current_base_digest']})")


@registry_app.command("history")
def history(reference: str = typer.Argument(..., metavar="REPOSITORY:TAG", help="The tag")) -> None:
    """Where a tag pointed before (a refreshed cache keeps the old digest pullable)."""
    repo, tag = _repo_tag(reference)
    for h in request("GET", "/api/v1/registry/tag-history", params={"repository": repo, "tag": tag}):
        say(f"{h['digest']}\treplaced by {h['replaced_by']}\tat {h['replaced_at']} ({h['actor']})")


def _add_refresh(body: dict[str, object]) -> None:
    out = request("POST", "/api/v1/registry/refresh-policies", json_body=body)
    say(f"refresh policy {out['id']}: {out['kind']} {out['target']} every {out['interval_seconds']}s, "
        f"tags {','.join(out['tags'])}")


@refresh_app.command("upstream")
def refresh_upstream(prefix: str = typer.Argument(..., help="A pull-through cache's prefix"),
                     every: str = typer.Option("6h", "--every", help="How often: 30m, 6h, 1d or seconds"),
                     tags: str = typer.Option("*", "--tags", help="comma-separated tag globs")) -> None:
    """Refresh the tags cached under the pull-through PREFIX every interval."""
    _add_refresh({"kind": "upstream", "target": prefix, "interval_seconds": _seconds(every),
                  "tags": [t for t in tags.split(",") if t]})


@refresh_app.command("import")
def refresh_import(
    repository: str = typer.Argument(..., help="The repository in Conveyor"),
    source: str = typer.Argument(..., help="docker://HOST/REPO"),
    every: str = typer.Option("1d", "--every", help="How often: 30m, 6h, 1d or seconds"),
    tags: str = typer.Option("latest", "--tags", help="comma-separated tags or globs"),
    src_creds: str = typer.Option(None, "--src-creds", help="USER:PASSWORD for the source"),
    src_insecure: bool = typer.Option(False, "--src-insecure", help="plain HTTP for the source"),
) -> None:
    """Re-import REPOSITORY's tags from SOURCE every interval."""
    user, _, password = (src_creds or "").partition(":")
    _add_refresh({"kind": "import", "target": repository, "source": source, "interval_seconds": _seconds(every),
                  "tags": [t for t in tags.split(",") if t], "username": user or None, "password": password or None,
                  "insecure": src_insecure})


@refresh_app.command("list")
def refresh_list() -> None:
    """The refresh policies: id, kind, target, interval and whether the last refresh worked."""
    for p in request("GET", "/api/v1/registry/refresh-policies"):
        health = f"FAILING since {p['failing_since']}: {p['last_error']}" if p["failing_since"] else \
            f"ok at {p['last_ok_at'] or 'never yet'}"
        say(f"{p['id']}\t{p['kind']}\t{p['target']}\tevery {p['interval_seconds']}s\t{health}")


@refresh_app.command("run")
def refresh_run(policy_id: int = typer.Argument(..., help="The policy's id (from `refresh list`)")) -> None:
    """Refresh now."""
    out = request("POST", f"/api/v1/registry/refresh-policies/{policy_id}/run")
    for m in out["moved"]:
        say(f"{m['repository']}:{m['tag']} {m['old_digest'] or '(new)'} -> {m['new_digest']}")
    say(f"checked {len(out['checked'])} tag(s), moved {len(out['moved'])}")
    if out["error"]:
        fail(f"refresh failed (cached digests keep serving): {out['error']}")


@refresh_app.command("remove")
def refresh_remove(policy_id: int = typer.Argument(..., help="The policy's id (from `refresh list`)")) -> None:
    """Delete a refresh policy (the cached tags stay as they are)."""
    request("DELETE", f"/api/v1/registry/refresh-policies/{policy_id}")
    say(f"removed refresh policy {policy_id}")

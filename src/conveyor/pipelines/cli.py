"""``conveyor run ...``, ``conveyor secret ...``, ``conveyor image base`` and ``conveyor runner ...``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from conveyor.core import client
from conveyor.core.client import console, fail, request, say

run_app = typer.Typer(help="Pipeline runs: list, show, follow logs, cancel, retry, start.", no_args_is_help=True)
secret_app = typer.Typer(help="Secrets handed to a repository's pipelines (masked in logs).", no_args_is_help=True)
image_app = typer.Typer(help="Images made locally (base images for pipelines).", no_args_is_help=True)


def _line(r: dict[str, Any]) -> str:
    where = f" at '{r['failed_step']}'" if r.get("failed_step") else ""
    msg = f": {r['message']}" if r.get("message") and r["state"] not in ("success", "running", "queued") else ""
    pr = f" PR #{r['pr_number']}" if r.get("pr_number") else ""
    return f"{r['id']}\t{r['repo']}#{r['number']}\t{r['pipeline']}{pr}\t{r['sha'][:12]}\t{r['state']}{where}{msg}"


@run_app.command("list")
def list_runs(repo: str = typer.Argument(None, help="Only this repository's runs (default: all)"),
              state: str = typer.Option(None, "--state", help="Only runs in this state (queued | running | success | "
                                        "failure | error | cancelled)"),
              limit: int = typer.Option(30, "--limit", help="At most this many")) -> None:
    """Newest runs first (of one repository, or all)."""
    params: dict[str, Any] = {"limit": limit}
    if repo:
        params["repo"] = repo
    if state:
        params["state"] = state
    for r in request("GET", "/api/v1/runs", params=params):
        say(_line(r))


@run_app.command("show")
def show(
    run_id: int = typer.Argument(..., help="The run's id"),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON"),
) -> None:
    """A run with its steps, outputs and artifacts."""
    r = request("GET", f"/api/v1/runs/{run_id}")
    if as_json:
        say(json.dumps(r, indent=2))
        return
    say(_line(r))
    for s in r["steps"]:
        msg = f"  {s['message']}" if s["message"] else ""
        say(f"  {s['index']:>2} {s['state']:<9} {s['name']}{msg}")
    image = (r.get("outputs") or {}).get("image")
    if image and image.get("pushed"):
        say(f"image {image['repository']}@{image['digest']} tags {', '.join(image['tags'])}")
    for a in r["artifacts"]:
        say(f"artifact {a['name']} ({a['kind']}) {a['digest']} {a['size']} bytes")


@run_app.command("logs")
def logs(
    run_id: int = typer.Argument(..., help="The run's id"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the run ends"),
) -> None:
    """Print a run's log; with --follow, keep printing as it is written."""
    after = 0
    while True:
        out = request("GET", f"/api/v1/runs/{run_id}/logs", params={"after": after})
        for c in out["chunks"]:
            sys.stdout.write(c["text"])
        sys.stdout.flush()
        after = out["next"]
        if out["finished"] or not follow:
            if follow and out["state"] != "success":
                raise typer.Exit(1)
            return
        if not out["chunks"]:
            time.sleep(0.3)


@run_app.command("cancel")
def cancel(run_id: int = typer.Argument(..., help="The run's id")) -> None:
    """Cancel a queued run, or ask a running one's runner to stop it."""
    r = request("POST", f"/api/v1/runs/{run_id}/cancel")
    say(f"run {run_id}: {'cancel requested' if r['state'] == 'running' else r['state']}")


@run_app.command("retry")
def retry(run_id: int = typer.Argument(..., help="The run's id")) -> None:
    """Queue a new run of the same pipeline at the same commit; prints its id."""
    say(request("POST", f"/api/v1/runs/{run_id}/retry")["id"])


@run_app.command("start")
def start(repo: str = typer.Argument(..., help="The repository"),
          pipeline: str = typer.Option("ci", "--pipeline", help="pr | ci"),
          ref: str = typer.Option(None, "--ref", help="A branch (default: the repository's default branch)"),
          sha: str = typer.Option(None, "--sha", help="A commit (default: the branch's tip)")) -> None:
    """Queue a run by hand; prints its id."""
    body = {"pipeline": pipeline, "ref": ref, "sha": sha}
    say(request("POST", f"/api/v1/repos/{repo}/runs", json_body=body)["id"])


@run_app.command("validate")
def validate(directory: Path = typer.Argument(Path("."), help="A checkout with .conveyor/")) -> None:
    """Check .conveyor/pipeline.yaml and app.yaml locally, as a run would."""
    from conveyor.pipelines.spec import SpecError, load_workspace

    try:
        pipelines, app = load_workspace(directory)
    except SpecError as exc:
        fail(str(exc))
    for name, spec in pipelines.items():
        how = "as a DAG of needs" if spec.parallel else "in order"
        say(f"{name}: {len(spec.steps)} step(s) {how}: {', '.join(s.name for s in spec.steps)}")
    if app:
        say(f"app {app.name} {app.version} image {app.image}")


@secret_app.command("set")
def secret_set(
    repo: str = typer.Argument(..., help="Repository"),
    name: str = typer.Argument(..., help="Secret name (letters, digits, _)"),
    pull_requests: bool = typer.Option(False, "--pull-requests",
                                       help="Also hand it to pull-request pipelines (default: CI of protected "
                                            "branches only)"),
) -> None:
    """Set a secret; the value is read from standard input."""
    value = sys.stdin.read().rstrip("\n")
    request("PUT", f"/api/v1/repos/{repo}/secrets/{name}",
            json_body={"value": value, "scope": "all" if pull_requests else "protected"})
    say(f"secret {name} set for {repo} ({'every pipeline' if pull_requests else 'CI of protected branches only'})")


@secret_app.command("list")
def secret_list(repo: str = typer.Argument(..., help="Repository")) -> None:
    """The repository's secrets and who gets each (values are never shown)."""
    for s in request("GET", f"/api/v1/repos/{repo}/secrets"):
        say(f"{s['name']}\t{'CI of protected branches' if s['scope'] == 'protected' else 'every pipeline'}")


@secret_app.command("delete")
def secret_delete(repo: str = typer.Argument(..., help="Repository"),
                  name: str = typer.Argument(..., help="Secret name")) -> None:
    """Delete a repository's secret."""
    request("DELETE", f"/api/v1/repos/{repo}/secrets/{name}")


@image_app.command("base")
def base_image(
    tag: str = typer.Option("cache/debian-python:12", "--tag", help="REPOSITORY:TAG in Conveyor's registry"),
    suite: str = typer.Option("bookworm", "--suite", help="The Debian release to debootstrap"),
    packages: str = typer.Option("python3", "--packages", help="Comma-separated Debian packages"),
    mirror: str = typer.Option(None, "--mirror", help="Debian mirror (default: the one apt uses here)"),
    user: str = typer.Option("admin", "--user", help="Registry user the token belongs to"),
    refresh: bool = typer.Option(False, "--refresh", help="debootstrap again (current packages, security fixes) "
                                 "and push under the same tag; apps built on it are rebuilt"),
) -> None:
    """Make a minimal Debian image with debootstrap and import it into the registry."""
    from urllib.parse import urlsplit

    from conveyor.images.debian import BaseImageError, build_and_import

    token = client.token()
    if not token:
        fail("no token: pass --token or set CONVEYOR_TOKEN")
    host = urlsplit(client.server_url()).netloc
    try:
        digest = build_and_import(host, user, token, tag=tag, suite=suite,
                                  packages=tuple(p for p in packages.split(",") if p), mirror=mirror,
                                  log=lambda m: print(m, file=sys.stderr), refresh=refresh)
    except BaseImageError as exc:
        fail(str(exc))
    say(f"{tag}@{digest}")


runner_app = typer.Typer(help="Pipeline runners: register them, or run one (`conveyor runner --server URL --token T`).",
                         invoke_without_command=True)


@runner_app.callback()
def runner_main(
    ctx: typer.Context,
    server: str = typer.Option(None, "--server", help="The Conveyor server's URL (or CONVEYOR_SERVER)"),
    token: str = typer.Option(None, "--token", help="This runner's token, from `runner register` (or CONVEYOR_TOKEN)"),
    executor: str = typer.Option("podman", "--executor", help="podman (containers on this machine) | kubernetes"),
    concurrency: int = typer.Option(2, "--concurrency", "-c", help="Runs executed at once"),
    work_dir: Path = typer.Option(Path("~/.local/state/conveyor-runner"), "--work-dir",
                                  help="Workspaces and the container storage of this runner"),
    default_image: str = typer.Option("cache/debian-python:12", "--default-image",
                                      help="Image of `run:` steps that name none"),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error"),
    kubeconfig: Path = typer.Option(None, "--kubeconfig", help="kubernetes executor: the cluster's kubeconfig"),
    context: str = typer.Option(None, "--context", help="kubernetes executor: the kubeconfig's context"),
    cluster: str = typer.Option(None, "--cluster", help="kubernetes executor: a local Conveyor cluster of the "
                                "data dir (instead of --kubeconfig)"),
    namespace: str = typer.Option("conveyor-runs", "--namespace", help="kubernetes executor: where run pods go"),
    pod_server: str = typer.Option(None, "--pod-server", help="kubernetes executor with --kubeconfig: the "
                                   "server's URL as pods reach it (default: --server)"),
) -> None:
    """Without a subcommand: run a runner. It claims runs over the HTTP API only (no database, no data dir)."""
    if server or token:
        client.configure(server, token, None)
    if ctx.invoked_subcommand is not None:
        return
    import logging

    from conveyor.pipelines.runner.main import Runner

    url, tok = client.server_url(), client.token()
    if not tok:
        fail("no runner token: pass --token (from `conveyor runner register NAME`) or set CONVEYOR_TOKEN")
    if executor not in ("podman", "kubernetes"):
        fail(f"unknown executor '{executor}'; this runner has: podman, kubernetes")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root = work_dir.expanduser()
    kube = _kube_target(url, root, kubeconfig, context, cluster, namespace, pod_server) \
        if executor == "kubernetes" else None
    Runner(url, tok, concurrency, root / "workspaces", str(root / "containers"), default_image,
           kube=kube).run_forever()


def _kube_target(url: str, root: Path, kubeconfig: Path | None, context: str | None, cluster: str | None,
                 namespace: str, pod_server: str | None) -> Any:
    from conveyor.core.errors import ConveyorError
    from conveyor.pipelines.runner.kubernetes import KubeError, kubeconfig_target, local_cluster_target

    if (kubeconfig is None) == (cluster is None):
        fail("--executor kubernetes needs exactly one of --kubeconfig PATH or --cluster NAME")
    secrets_dir = root / "kube"
    try:
        if cluster is not None:
            return local_cluster_target(client._target.data_dir.expanduser().resolve(), cluster, namespace, url,
                                        secrets_dir)
        assert kubeconfig is not None
        return kubeconfig_target(kubeconfig.expanduser(), context, namespace, url, secrets_dir, pod_server)
    except (ConveyorError, KubeError) as exc:
        fail(getattr(exc, "detail", None) or str(exc))


@runner_app.command("register")
def runner_register(
    name: str = typer.Argument(..., help="Runner name (lowercase letters, digits, '-')"),
    labels: str = typer.Option("", "--labels", help="Comma-separated labels; runs with `runs-on:` need them all"),
    repos: str = typer.Option("", "--repos", help="Comma-separated repositories it may serve (default: all)"),
) -> None:
    """Register a runner (admin) and print its token (shown once)."""
    body = {"name": name, "labels": [x for x in labels.split(",") if x], "repos": [x for x in repos.split(",") if x]}
    say(request("POST", "/api/v1/runners", json_body=body)["token"])


@runner_app.command("list")
def runner_list() -> None:
    """Registered runners with their labels, repositories and when they were last seen."""
    table = Table("name", "labels", "repos", "last seen", "revoked")
    for r in request("GET", "/api/v1/runners"):
        table.add_row(r["name"], ",".join(r["labels"]), ",".join(r["repos"]) or "all", r["last_seen_at"] or "-",
                      "yes" if r["revoked"] else "")
    console.print(table)


@runner_app.command("revoke")
def runner_revoke(name: str = typer.Argument(..., help="Runner name")) -> None:
    """Revoke a runner: its token stops working at once and its runs go back to the queue."""
    request("DELETE", f"/api/v1/runners/{name}")
    say(f"revoked runner {name}")

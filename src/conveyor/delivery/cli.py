"""Delivery commands: the GitOps repository, promotions, rollbacks, app status and DORA metrics."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from conveyor.core.client import console, request, say

gitops_app = typer.Typer(help="The GitOps repository.", no_args_is_help=True)
app_app = typer.Typer(help="Delivered apps: where each version runs.", no_args_is_help=True)
promotion_app = typer.Typer(help="Promotion records and their timelines.", no_args_is_help=True)
env_app = typer.Typer(help="Environments of the GitOps repository.", no_args_is_help=True)
env_secret_app = typer.Typer(help="Application secrets, encrypted to the environment's cluster and set by PR.",
                             no_args_is_help=True)
env_app.add_typer(env_secret_app, name="secret")
freeze_app = typer.Typer(help="The stop switch: halt every new merge into environment branches.",
                         no_args_is_help=True)


@gitops_app.command("init")
def gitops_init(repo: str = typer.Argument(..., help="The GitOps repository to create")) -> None:
    """Create REPO with environments dev, qa, prod on main and one protected branch per environment."""
    out = request("POST", "/api/v1/gitops", json_body={"repo": repo})
    for name, env in out["environments"].items():
        after = f" after {env['after']}" if env["after"] else ""
        say(f"{name}: cluster {env['cluster']}, branch {env['branch']}{after}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@app_app.command("list")
def app_list() -> None:
    """The delivered apps with their source and GitOps repositories."""
    table = Table("app", "source repo", "GitOps repo")
    for a in request("GET", "/api/v1/apps"):
        table.add_row(a["name"], a["source_repo"], a["gitops_repo"])
    console.print(table)


@app_app.command("status")
def app_status(app: str = typer.Argument(..., help="The app")) -> None:
    """Version, commit, image digest and state of APP in every environment."""
    table = Table("env", "cluster", "version", "commit", "image digest", "last state", "pending", "lead time")
    envs = request("GET", f"/api/v1/apps/{app}")
    for e in envs:
        pending = e["pending"]
        table.add_row(
            e["env"], e["cluster"], e["version"] or "-", (e["commit"] or "-")[:12],
            (e["image_digest"] or "-")[:19], e["state"] or "-",
            f"{pending['version']} ({pending['state']})" if pending else "-", _duration(e["lead_time_seconds"]),
        )
    console.print(table)
    for e in envs:
        for label, key in (("frozen", "frozen"), ("freeze ahead", "upcoming_freeze"), ("held", "held")):
            if e.get(key):
                say(f"{e['env']}: {label}: {e[key]}")


@app_app.command("dora")
def app_dora(
    app: str = typer.Argument(..., help="The app"),
    days: int = typer.Option(30, "--days", help="The window: the last DAYS days"),
) -> None:
    """The four DORA metrics of APP per environment."""
    table = Table("env", "deployments", "per day", "lead time (median)", "change failure rate", "time to restore")
    for d in request("GET", f"/api/v1/apps/{app}/dora", params={"days": days}):
        cfr = d["change_failure_rate"]
        table.add_row(d["env"], str(d["deployments"]), f"{d['deployment_frequency_per_day']:.2f}",
                      _duration(d["lead_time_seconds"]), "-" if cfr is None else f"{cfr:.0%}",
                      _duration(d["time_to_restore_seconds"]))
    console.print(table)


def _print_promotion(p: dict[str, Any]) -> None:
    say(f"promotion {p['id']}: {p['app']} {p['version']} -> {p['env']} ({p['state']})")
    say(f"image {p['image']}:{p['image_tag']}@{p['image_digest']}")
    say(f"source {p['source_repo']}@{p['source_commit']} by {p['author']}, CI run {p['ci_run']}")
    if p["pr_number"]:
        say(f"GitOps PR #{p['pr_number']} in {p['gitops_repo']}")
    if p["failure_reason"]:
        say(f"failure: {p['failure_reason']}")
    for e in p["events"]:
        say(f"  {e['at']}  {e['kind']:<16} {e['message']}")


@promotion_app.command("show")
def promotion_show(pid: int = typer.Argument(..., help="The promotion's id")) -> None:
    """A promotion: version, image, source commit, GitOps PR, failure and its timeline."""
    _print_promotion(request("GET", f"/api/v1/promotions/{pid}"))


@promotion_app.command("list")
def promotion_list(app: str = typer.Option(None, "--app", help="Only this app's promotions"),
                   env: str = typer.Option(None, "--env", help="Only promotions to this environment")) -> None:
    """Promotions, newest first: app, version, environment, state, GitOps PR."""
    table = Table("id", "app", "version", "env", "state", "PR", "created")
    params = {k: v for k, v in (("app", app), ("env", env)) if v}
    for p in request("GET", "/api/v1/promotions", params=params):
        table.add_row(str(p["id"]), p["app"], p["version"], p["env"], p["state"],
                      f"#{p['pr_number']}" if p["pr_number"] else "-", p["created_at"])
    console.print(table)


def promote(
    app: str = typer.Argument(..., help="The app"),
    to: str = typer.Option(..., "--to", help="The environment to promote to"),
    version: str = typer.Option(None, "--version", help="The version (default: the one verified in the previous "
                                "environment)"),
) -> None:
    """Promote APP to an environment (default version: the one verified in the previous environment)."""
    p = request("POST", f"/api/v1/apps/{app}/promote", json_body={"env": to, "version": version})
    say(f"promotion {p['id']}: {p['app']} {p['version']} -> {p['env']}")


def rollback(
    app: str = typer.Argument(..., help="The app"),
    env: str = typer.Option(..., "--env", help="The environment to roll back"),
    to: str = typer.Option(None, "--to", help="A verified version (default: the one before what runs now)"),
) -> None:
    """Deploy an earlier verified version of APP to ENV again."""
    p = request("POST", f"/api/v1/apps/{app}/rollback", json_body={"env": env, "to": to})
    say(f"promotion {p['id']}: rolling {p['app']} in {p['env']} back to {p['version']}")


@app_app.command("release")
def app_release(
    app: str = typer.Argument(..., help="The app"),
    env: str = typer.Option(..., "--env", help="The held environment"),
    reason: str = typer.Option(..., "--reason", help="Why automatic promotions may go on"),
) -> None:
    """Release APP's hold in ENV (set after a rollback): automatic promotions go on."""
    h = request("POST", f"/api/v1/apps/{app}/holds/{env}/release", json_body={"reason": reason})
    say(f"{app} in {env} released by {h['released_by']} (held since {h['created_at']}: {h['reason']})")


@promotion_app.command("override")
def promotion_override(
    pid: int = typer.Argument(..., help="The promotion's id"),
    reason: str = typer.Option(..., "--reason", help="Why it may go now"),
) -> None:
    """Let promotion PID through its environment's freeze windows, once."""
    p = request("POST", f"/api/v1/promotions/{pid}/override", json_body={"reason": reason})
    say(f"promotion {p['id']} ({p['app']} {p['version']} -> {p['env']}) may pass freeze windows: {reason}")


@freeze_app.command("start")
def freeze_start(env: str = typer.Option(None, "--env", help="One environment (default: every environment)"),
                 reason: str = typer.Option(..., "--reason", help="Shown on every held PR")) -> None:
    """Halt every new merge into the environment branches (across apps) until `freeze end`."""
    f = request("POST", "/api/v1/freezes", json_body={"env": env, "reason": reason})
    say(f"frozen: {f['env'] or 'every environment'} by {f['started_by']}: {f['reason']}")


@freeze_app.command("end")
def freeze_end(env: str = typer.Option(None, "--env", help="The environment named at start (default: every one)"),
               reason: str = typer.Option(None, "--reason", help="Recorded in the audit log")) -> None:
    """Lift the stop switch."""
    f = request("POST", "/api/v1/freezes/end", json_body={"env": env, "reason": reason})
    say(f"freeze of {f['env'] or 'every environment'} ended by {f['ended_by']}")


@freeze_app.command("list")
def freeze_list(all_: bool = typer.Option(False, "--all", help="Include ended ones")) -> None:
    """The stop switches in force (or all of them)."""
    table = Table("id", "env", "reason", "started", "by", "ended", "by")
    for f in request("GET", "/api/v1/freezes", params={"all": "true" if all_ else "false"}):
        table.add_row(str(f["id"]), f["env"] or "*", f["reason"], f["started_at"], f["started_by"],
                      f["ended_at"] or "-", f["ended_by"] or "-")
    console.print(table)


def _read_values(key: str, from_file: Path | None, env_file: Path | None) -> dict[str, bytes]:
    """The values to set: KEY=VALUE lines of --env-file, or one value for --key from --from-file or stdin
    (never from the command line, where other users of the machine would see it)."""
    if env_file is not None:
        out = {}
        for line in env_file.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                k, sep, v = line.partition("=")
                if not sep:
                    raise typer.BadParameter(f"{env_file}: a line without '=' (KEY=VALUE expected)")
                out[k.strip()] = v.encode()
        return out
    raw = from_file.read_bytes() if from_file is not None else sys.stdin.buffer.read()
    return {key: raw.removesuffix(b"\n") if from_file is None else raw}


GITOPS_HELP = "GitOps repository (default: the app's, or the only one)"


APP_ARG = typer.Argument(..., help="The application (as delivery knows it)")
ENV_ARG = typer.Argument(..., help="The environment (dev, qa, prod, ...)")
SECRET_ARG = typer.Argument(..., help="The Kubernetes Secret's name")


@env_secret_app.command("set")
def secret_set(
    app: str = APP_ARG, env: str = ENV_ARG, name: str = SECRET_ARG,
    key: str = typer.Option("value", "--key", help="The key in the Secret that holds the value"),
    from_file: Path = typer.Option(None, "--from-file", help="Read the value from this file (as is)"),
    env_file: Path = typer.Option(None, "--env-file", help="KEY=VALUE lines: several keys at once"),
    gitops: str = typer.Option(None, "--gitops", help=GITOPS_HELP),
) -> None:
    """Set the Secret NAME of APP in ENV (value from stdin, --from-file or --env-file): encrypted to the
    environment's cluster and proposed as a PR to its branch. It replaces every key of the Secret."""
    values = _read_values(key, from_file, env_file)
    body = {"values": {k: base64.b64encode(v).decode() for k, v in values.items()}}
    out = request("PUT", f"/api/v1/apps/{app}/envs/{env}/secrets/{name}", json_body=body, params=_repo(gitops))
    _say_proposed(out)


@env_secret_app.command("remove")
def secret_remove(app: str = APP_ARG, env: str = ENV_ARG, name: str = SECRET_ARG,
                  gitops: str = typer.Option(None, "--gitops", help="GitOps repository")) -> None:
    """Remove the Secret NAME of APP in ENV through a PR to its branch (the agent prunes it after the merge)."""
    _say_proposed(request("DELETE", f"/api/v1/apps/{app}/envs/{env}/secrets/{name}", params=_repo(gitops)))


@env_secret_app.command("list")
def secret_list(app: str = APP_ARG, env: str = ENV_ARG,
                gitops: str = typer.Option(None, "--gitops", help="GitOps repository")) -> None:
    """The app's secrets in ENV: names, keys and fingerprints (values are never shown)."""
    table = Table("secret", "key", "fingerprint")
    for name, keys in request("GET", f"/api/v1/apps/{app}/envs/{env}/secrets", params=_repo(gitops)).items():
        for k, fp in keys.items():
            table.add_row(name, k, fp)
    console.print(table)


def _repo(gitops: str | None) -> dict[str, Any] | None:
    return {"gitops": gitops} if gitops else None


def _say_proposed(out: dict[str, Any]) -> None:
    changes = ", ".join(f"{k} {c}" for k, c in out["changes"].items())
    say(f"PR #{out['pr_number']} in {out['repo']} ({out['branch']} -> {out['path']}): {changes}")

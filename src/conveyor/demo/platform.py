"""Bringing the demo platform up and down: server, users, clusters, base image, repositories, agents."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
APP = "hello"
GITOPS = "gitops"
API_KEY_SECRET = "hello-api"  # the Secret (key `api-key`) hello reads its API key from
CLUSTERS = {"nonprod": ("dev", "qa"), "prod": ("prod",)}
# `conveyor demo --agent flux`: this cluster runs Flux's controllers instead of Conveyor's agent, so dev
# and qa (the rollback included) are deployed by Flux and prod by Conveyor's agent.
FLUX_CLUSTER = "nonprod"
NOTIFICATION_KINDS = {"Receiver", "Provider", "Alert"}  # need notification-controller, which is not built
USERS = {"dana": "developer", "theo": "reviewer", "olga": "cluster-admin", "omar": "cluster-admin"}


class DemoError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last_error = f" (last error: {exc})"
        time.sleep(interval)
    raise DemoError(f"timed out after {int(timeout)}s waiting for {what}{last_error}")


@dataclass
class Platform:
    data_dir: Path
    port: int = field(default_factory=free_port)
    tokens: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    flux_clusters: tuple[str, ...] = ()
    events_addrs: dict[str, str] = field(default_factory=dict)
    agent_status_urls: dict[str, str] = field(default_factory=dict)  # cluster -> its agent's /status (NodePort)
    state_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state_file = self.data_dir / "demo.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.port}"

    def api(self, user: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[user]}"}, timeout=60)

    def git_url(self, repo: str, user: str) -> str:
        return f"http://{user}:{self.tokens[user]}@127.0.0.1:{self.port}/git/{repo}.git"

    def cli(self, *args: str, user: str = "admin", stdin: str | None = None) -> str:
        env = dict(os.environ, CONVEYOR_SERVER=self.url, CONVEYOR_TOKEN=self.tokens[user],
                   CONVEYOR_DATA_DIR=str(self.data_dir))
        p = subprocess.run([sys.executable, "-m", "conveyor", *args], env=env, capture_output=True, text=True,
                           timeout=3600, input=stdin)
        if p.returncode != 0:
            raise DemoError(f"conveyor {' '.join(args)} failed: {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                                env=dict(os.environ, **(env or {})))
        self.save()

    def save(self) -> None:
        self.state_file.write_text(json.dumps({
            "port": self.port, "pids": {k: p.pid for k, p in self.procs.items()},
        }))

    # --- server and users ---------------------------------------------------------------------
    def start_server(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("server", [sys.executable, "-m", "conveyor", "up", "--data-dir", str(self.data_dir),
                               "--port", str(self.port), "--log-level", "warning"])
        proc = self.procs["server"]

        def healthy() -> bool:
            if proc.poll() is not None:
                raise DemoError(f"the server exited; see {self.data_dir / 'logs' / 'server.log'}")
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

        wait_until("the server to start", healthy, 120, 0.2)
        self.tokens["admin"] = (self.data_dir / "admin.token").read_text().strip()
        # Everything of this one-machine installation listens on loopback, where the outbound policy
        # sends nothing unless an admin allows it: its admin does (the agents' nodes: install_agent).
        with self.api() as api:
            r = api.put("/api/v1/settings/outbound", json={"allow": ["127.0.0.1"]})
            if r.status_code != 200:
                raise DemoError(f"allowing webhooks to the local agents: {r.text}")

    def create_users(self) -> None:
        with self.api() as api:
            for name, role in USERS.items():
                r = api.post("/api/v1/users", json={"name": name, "role": role})
                if r.status_code != 201:
                    raise DemoError(f"creating user {name}: {r.text}")
                self.tokens[name] = r.json()["token"]
        self.save_tokens()
        # Clusters pull the app's images without credentials; everything else needs a token.
        self.cli("registry", "anonymous", "add", "apps/")

    def save_tokens(self) -> None:
        (self.data_dir / "tokens.json").write_text(json.dumps(self.tokens))
        os.chmod(self.data_dir / "tokens.json", 0o600)

    # --- clusters -----------------------------------------------------------------------------
    def create_clusters(self, progress: Callable[[str], None]) -> None:
        """Each cluster is created, then registered by a cluster administrator: that creates its agent
        identity, whose token can read the GitOps repository and post only that cluster's deploy statuses.
        A Conveyor-agent cluster gets its age key installed in the cluster first; only the public half is
        registered (what `conveyor env secret set` encrypts to)."""
        from conveyor.agent import install_age_key
        from conveyor.clusters import create

        for name in CLUSTERS:
            spec = create(self.data_dir, name, registries=[self.registry], progress=progress)
            kind = "flux" if name in self.flux_clusters else "conveyor"
            recipient = install_age_key(self.kubeconfig(name)) if kind == "conveyor" else None
            with self.api("olga") as api:
                r = api.post("/api/v1/clusters", json={"name": name, "agent": kind, "age_recipient": recipient,
                                                       "kubernetes_version": spec.version})
                if r.status_code != 201:
                    raise DemoError(f"registering cluster {name}: {r.text}")
                self.tokens[f"agent-{name}"] = r.json()["agent_token"]
                if r.json().get("flux"):
                    self.events_addrs[name] = r.json()["flux"]["events_addr"]
        self.save_tokens()

    def kubeconfig(self, cluster: str) -> Path:
        from conveyor.clusters import Layout, load

        return Layout(self.data_dir, load(self.data_dir, cluster)).kubeconfig

    # --- base image, repositories --------------------------------------------------------------
    def base_image(self, log: Callable[[str], None]) -> str:
        from conveyor.images.debian import build_and_import

        return build_and_import(self.registry, "admin", self.tokens["admin"], log=log)

    def init_gitops(self) -> None:
        from conveyor.delivery import DEFAULT_ENVIRONMENTS

        envs = {name: dict(spec) for name, spec in DEFAULT_ENVIRONMENTS.items()}
        # Security-related changes (a `Security:` trailer, a base-image rebuild) need one more approval in qa.
        envs["qa"]["risk"] = {"extra_approvals": 1, "sensitive_kinds": []}
        # hello's GET / reports what its counter (a second Deployment of its chart, called by its Service's
        # DNS name) answered: verification asks it through hello's NodePort, as users do, and needs both.
        for spec in envs.values():
            spec["verify"] = {**spec["verify"], "path": "/", "dependency": "counter"}
        # hello reads its API key from a Secret in every environment whose agent can decrypt it
        # (Conveyor's: Flux is not set up for SOPS decryption here).
        for name in self.secret_envs():
            envs[name]["values"] = {**envs[name].get("values", {}), "apiKeySecret": API_KEY_SECRET}
        with self.api("olga") as api:
            r = api.post("/api/v1/gitops", json={"repo": GITOPS, "environments": envs})
            if r.status_code != 201:
                raise DemoError(f"gitops init: {r.text}")

    def secret_envs(self) -> list[str]:
        from conveyor.delivery import DEFAULT_ENVIRONMENTS

        return [n for n, spec in DEFAULT_ENVIRONMENTS.items() if spec["cluster"] not in self.flux_clusters]

    def create_app_repo(self, work: Path) -> Path:
        with self.api("dana") as api:
            if api.post("/api/v1/repos", json={"name": APP}).status_code != 201:
                raise DemoError("could not create the application repository")
        wc = work / APP
        if wc.exists():
            shutil.rmtree(wc)
        shutil.copytree(EXAMPLES / APP, wc)
        git(wc, "init", "-q", "-b", "main")
        git(wc, "add", "-A")
        git(wc, "commit", "-q", "-m", "Hello service: code, tests, Dockerfile, Helm chart, pipeline")
        git(wc, "remote", "add", "origin", self.git_url(APP, "dana"))
        git(wc, "push", "-q", "origin", "main")
        with self.api("olga") as api:
            r = api.put(f"/api/v1/repos/{APP}/protection/main",
                        json={"approvals": 1, "required_checks": ["conveyor/pr"], "no_self_approval": True})
            if r.status_code != 200:
                raise DemoError(f"protecting main: {r.text}")
        self._deployable_first_run()
        return wc

    def _deployable_first_run(self) -> None:
        """The first push queues CI before main is protected (a protected branch refuses the push that
        would create it) — unless the protection won the race. CI of an unprotected branch is never
        deployable, so when it lost, Olga cancels that run and Dana starts CI of main again."""
        def first() -> dict[str, Any] | None:
            with self.api() as api:
                runs = [r for r in api.get("/api/v1/runs", params={"repo": APP}).json() if r["pipeline"] == "ci"]
            return runs[-1] if runs else None

        run: dict[str, Any] = wait_until("the first CI run", first, 60, 0.3)
        if run["deployable"]:
            return
        with self.api("olga") as api:
            api.post(f"/api/v1/runs/{run['id']}/cancel")
        with self.api("dana") as api:
            r = api.post(f"/api/v1/repos/{APP}/runs", json={"pipeline": "ci", "ref": "main"})
            if r.status_code != 201 or not r.json().get("deployable"):
                raise DemoError(f"starting CI of protected main: {r.status_code} {r.text}")

    # --- agents ---------------------------------------------------------------------------------
    def start_agents(self, progress: Callable[[str], None] = lambda _: None) -> None:
        for cluster in CLUSTERS:
            if cluster in self.flux_clusters:
                self.start_flux(cluster, progress)
            else:
                self.install_agent(cluster, progress)

    def install_agent(self, cluster: str, progress: Callable[[str], None]) -> None:
        """Conveyor's agent inside its cluster, as `conveyor agent install --webhooks` puts it there: its
        image from Conveyor's registry, the forge reached at host.conveyor.internal, a sync per environment
        the server says the cluster runs, and push webhooks through its NodePort. The admin first lets the
        server send webhooks to the node's address (a private one, refused by default)."""
        from conveyor.clusters import load

        self.cli("settings", "outbound", "allow", load(self.data_dir, cluster).node_ip)
        out = self.cli("agent", "install", cluster, "--interval", "30s", "--sync-timeout", "3m", "--webhooks")
        for line in out.splitlines():
            progress(line)
        status = next((ln.split()[-1] for ln in out.splitlines() if ln.startswith("agent status at ")), None)
        if status is None:
            raise DemoError(f"`conveyor agent install {cluster}` printed no status URL: {out}")
        self.agent_status_urls[cluster] = status

    def start_flux(self, cluster: str, progress: Callable[[str], None]) -> None:
        """Flux's source- and kustomize-controller on the host against the cluster, with the manifests
        `conveyor cluster flux-manifests` gives and their events sent straight to Conveyor."""
        from conveyor.clusters.flux import ensure_controllers
        from conveyor.clusters.flux import run as flux_run

        controllers = ensure_controllers(progress=progress)  # built once, ~7 minutes on 2 cores
        kubeconfig = self.kubeconfig(cluster)
        flux_run.install(kubeconfig, controllers)
        with self.api("olga") as api:
            r = api.post(f"/api/v1/clusters/{cluster}/flux/manifests")
            if r.status_code != 201:
                raise DemoError(f"Flux manifests of {cluster}: {r.text}")
        docs = [d for d in yaml.safe_load_all(r.json()["manifests"]) if d and d["kind"] not in NOTIFICATION_KINDS]
        for d in docs:
            if d["kind"] == "GitRepository":
                d["spec"]["interval"] = "10s"  # no Receiver without notification-controller: poll often
        flux_run.kubectl_run(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
        addr = self.events_addrs[cluster]
        for cmd in flux_run.commands(controllers, kubeconfig, self.data_dir / "flux" / cluster, addr, addr):
            self._spawn(f"flux-{cluster}-{cmd.name}", cmd.argv, cmd.env)

            def ready(url: str = cmd.health_url) -> bool:
                return httpx.get(url, timeout=2).status_code == 200

            wait_until(f"Flux {cmd.name} on {cluster}", ready, 60, 0.3)

    # --- teardown -------------------------------------------------------------------------------
    def stop(self, remove: bool) -> None:
        stop_processes(self.data_dir)
        if remove:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def stop_processes(data_dir: Path) -> None:
    """Stop a demo's agents, clusters and server (also one left running with --keep)."""
    state = data_dir / "demo.json"
    pids: dict[str, int] = json.loads(state.read_text()).get("pids", {}) if state.exists() else {}
    for name, pid in sorted(pids.items(), key=lambda kv: kv[0] == "server"):  # the server last
        if name == "server":
            _delete_clusters(data_dir)
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    if "server" not in pids:
        _delete_clusters(data_dir)


def _delete_clusters(data_dir: Path) -> None:
    from conveyor.clusters import delete, list_specs

    for spec in list_specs(data_dir):
        delete(data_dir, spec.name, force=True)


def git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="Dana Developer", GIT_AUTHOR_EMAIL="dana@example.invalid",
               GIT_COMMITTER_NAME="Dana Developer", GIT_COMMITTER_EMAIL="dana@example.invalid",
               GIT_TERMINAL_PROMPT="0")
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise DemoError(f"git {' '.join(args)} failed: {p.stderr.strip()}")
    return p.stdout

"""Agent benchmark on one local cluster: a 500-object revision (ConfigMaps, Services, Deployments) applied cold,
re-reconciled unchanged, and with one object changed, side by side with `kubectl apply --server-side` of the same
files; plus merge-to-apply-start latency with the forge's push webhook.

The agent's numbers are whole reconciles (git fetch, build, dry-run validation of every object, diff, apply,
inventory), measured in-process; kubectl's are its process runs. Deployments have replicas: 0 so that both sides
measure the API work, not the kubelet starting 150 pods on this machine; Services are headless because a local
cluster's service IP range cannot hold 150 x rounds x 2 addresses.

The issue's targets: cold apply <= 0.6x kubectl on an idle machine, unchanged re-reconcile < 0.5 s. The
table also gives the peak number of the agent's API requests in flight at once (dry runs, lists and
writes of one stage go through a pool of Applier.workers threads), which shows whether a stage really
goes in parallel. The load average is printed next to the ratios: the machine may be shared.

Run: python benchmarks/agent_apply.py [--objects 500] [--rounds 3] [--kubeconfig PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import conveyor_server, free_port, git, print_table, timed  # noqa: E402
from conveyor.agent.build import kubectl_binary  # noqa: E402
from conveyor.agent.config import AgentConfig  # noqa: E402
from conveyor.agent.runner import Agent  # noqa: E402


def objects(n: int) -> dict[str, list[dict[str, Any]]]:
    """n objects in files of 50: 40% ConfigMaps, 30% Services, 30% Deployments."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        kind = ("ConfigMap", "ConfigMap", "ConfigMap", "ConfigMap", "Service", "Service", "Service",
                "Deployment", "Deployment", "Deployment")[i % 10]
        name = f"obj-{i:04d}"
        if kind == "ConfigMap":
            out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                        "data": {"key": f"value-{i}", "other": "x" * 200}})
        elif kind == "Service":
            out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                        "spec": {"clusterIP": "None", "selector": {"app": name},
                                 "ports": [{"port": 80, "targetPort": 8080}]}})
        else:
            out.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                                 "template": {"metadata": {"labels": {"app": name}},
                                              "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}}})
    return {f"part-{j // 50:02d}.yaml": out[j:j + 50] for j in range(0, n, 50)}


class InFlight:
    """Counts the Kube calls of an agent in flight at once (a wrapper around its apply, get and list)."""

    def __init__(self, kube: Any) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()
        for name in ("apply", "get", "list"):
            setattr(kube, name, self.wrap(getattr(kube, name)))

    def wrap(self, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            try:
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.now -= 1
        return call


def write(dir_: Path, files: dict[str, list[dict[str, Any]]]) -> None:
    dir_.mkdir(parents=True, exist_ok=True)
    for name, objs in files.items():
        (dir_ / name).write_text("---\n".join(yaml.safe_dump(o) for o in objs))


def kubectl(kubeconfig: Path, *args: str) -> None:
    subprocess.run([kubectl_binary(), "--kubeconfig", str(kubeconfig), *args], check=True, capture_output=True,
                   timeout=600)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kubeconfig", type=Path, help="use this cluster instead of creating a local one")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    home = Path(tempfile.mkdtemp(prefix="cnv-bench-", dir="/tmp"))
    created = None
    if args.kubeconfig:
        kubeconfig = args.kubeconfig
    else:
        from conveyor.clusters import local

        print("creating a local cluster ...", flush=True)
        created = local.create(home, "bench", registries=[])
        kubeconfig = local.layout_of(home, created).kubeconfig
    try:
        with conveyor_server(tmp) as forge:
            run(args, tmp, forge, kubeconfig)
    finally:
        if created is not None:
            from conveyor.clusters import local

            local.delete(home, created.name, force=True)


def run(args: argparse.Namespace, tmp: Path, forge: Any, kubeconfig: Path) -> None:
    files = objects(args.objects)
    repo = f"bench-{uuid.uuid4().hex[:6]}"
    assert forge.api().post("/api/v1/repos", json={"name": repo}).status_code == 201
    wc = tmp / "wc"
    git("clone", "-q", forge.git_url(repo), str(wc))
    git("checkout", "-q", "-b", "main", cwd=wc)

    def commit(message: str) -> None:
        git("add", "-A", cwd=wc)
        git("commit", "-q", "-m", message, cwd=wc)
        git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=wc)

    write(wc / "deploy", files)
    commit("500 objects")

    rows: dict[str, list[float]] = {k: [] for k in ("cold", "unchanged", "one changed")}
    anchor: dict[str, list[float]] = {k: [] for k in rows}
    peaks: list[int] = []
    load_before = os.getloadavg()
    for r in range(args.rounds):
        ns_agent, ns_kubectl = f"bench-agent-{repo}-{r}", f"bench-kubectl-{repo}-{r}"
        cfg = AgentConfig.model_validate({
            "cluster": {"name": "bench", "kubeconfig": str(kubeconfig)},
            "listen": f"127.0.0.1:{free_port()}",
            "state_dir": str(tmp / f"state-{r}"),
            "syncs": [{"name": f"bench{r}", "url": forge.git_url(repo), "path": "deploy",
                       "target_namespace": ns_agent}],
        })
        agent = Agent(cfg)
        rec = agent.reconcilers[f"bench{r}"]
        inflight = InFlight(agent.kube)
        kubectl(kubeconfig, "create", "namespace", ns_kubectl)
        plain = tmp / f"plain-{r}"
        write(plain, files)
        apply = ("apply", "--server-side", "--field-manager", "bench", "-n", ns_kubectl, "-f", str(plain))

        # alternate who goes first so neither always meets a warmer API server
        steps = [("agent", lambda rec=rec: _must(rec.reconcile())),
                 ("kubectl", lambda apply=apply: kubectl(kubeconfig, *apply))]
        if r % 2:
            steps.reverse()
        for who, fn in steps:
            (rows if who == "agent" else anchor)["cold"].append(timed(fn))
        peaks.append(inflight.peak)
        for who, fn in steps:
            (rows if who == "agent" else anchor)["unchanged"].append(timed(fn))

        # one object changes: the agent's revision and kubectl's files alike
        first = next(iter(files))
        changed = [dict(o) for o in files[first]]
        changed[0] = {**changed[0], "data": {"key": f"changed-{r}", "other": "changed"}}
        write(wc / "deploy", {first: changed})
        commit(f"change one object, round {r}")
        write(plain, {first: changed})
        for who, fn in steps:
            (rows if who == "agent" else anchor)["one changed"].append(timed(fn))
        write(wc / "deploy", {first: files[first]})
        commit("restore")
        agent.close()
        kubectl(kubeconfig, "delete", "namespace", ns_agent, ns_kubectl, "--wait=false")

    latency = webhook_latency(tmp, forge, repo, wc, kubeconfig, commit)

    table = []
    for k in rows:
        a, b = statistics.median(rows[k]), statistics.median(anchor[k])
        table.append((f"{k} ({args.objects} objects, median of {args.rounds})", f"{a:.2f} s", f"{b:.2f} s",
                      f"{a / b:.2f}x"))
    table.append(("merge-to-apply-start via webhook (median of pushes)", f"{statistics.median(latency):.3f} s",
                  "-", f"max {max(latency):.3f} s"))
    table.append(("peak agent API requests in flight (cold apply, per round)", ", ".join(map(str, peaks)), "-", "-"))
    load = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(load_before, os.getloadavg(), strict=True))
    table.append(("load average 1/5/15 min (before/after)", load, "-", f"{os.cpu_count()} CPUs"))
    print_table("Agent vs kubectl apply --server-side (targets: cold <= 0.6x, unchanged < 0.5 s, webhook < 1 s)",
                table)


def _must(ok: bool) -> None:
    if not ok:
        raise SystemExit("agent reconcile did not end Ready")


def webhook_latency(tmp: Path, forge: Any, repo: str, wc: Path, kubeconfig: Path, commit: Any,
                    pushes: int = 10) -> list[float]:
    """Seconds from `git push` returning (the branch moved) to the agent starting to apply that revision."""
    secret = uuid.uuid4().hex
    port = free_port()
    cfg = AgentConfig.model_validate({
        "cluster": {"name": "bench", "kubeconfig": str(kubeconfig)},
        "listen": f"127.0.0.1:{port}",
        "state_dir": str(tmp / "state-hook"),
        "syncs": [{"name": "hook", "url": forge.git_url(repo), "path": "small",
                   "target_namespace": f"bench-hook-{repo}", "interval": "1h", "webhook_secret": secret}],
    })
    (wc / "small").mkdir(exist_ok=True)
    (wc / "small" / "cm.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hook"}, "data": {"n": "0"}}))
    commit("small sync")
    agent = Agent(cfg)
    rec = agent.reconcilers["hook"]
    started: dict[str, float] = {}
    seen = threading.Condition()

    def on_start(revision: str) -> None:
        with seen:
            started[revision] = time.perf_counter()
            seen.notify_all()

    rec.on_apply_start = on_start
    agent.server.start()
    thread = threading.Thread(target=rec.run, args=(agent.stop_event,), daemon=True)
    thread.start()
    r = forge.api().post(f"/api/v1/repos/{repo}/hooks",
                         json={"url": f"{agent.server.url}/hooks/hook", "secret": secret, "events": ["push"]})
    assert r.status_code == 201, r.text
    out = []
    time.sleep(2)
    for i in range(pushes):
        (wc / "small" / "cm.yaml").write_text(yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hook"}, "data": {"n": str(i + 1)}}))
        git("add", "-A", cwd=wc)
        git("commit", "-q", "-m", f"hook {i}", cwd=wc)
        sha = git("rev-parse", "HEAD", cwd=wc).strip()
        git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=wc)
        pushed = time.perf_counter()
        with seen:
            if not seen.wait_for(lambda sha=sha: sha in started, timeout=30):
                raise SystemExit(f"revision {sha[:12]} not applied within 30 s")
        out.append(started[sha] - pushed)
        time.sleep(0.5)
    agent.stop_event.set()
    rec.trigger.set()
    thread.join(10)
    agent.close()
    return out


if __name__ == "__main__":
    main()

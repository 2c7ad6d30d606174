"""Dashboard benchmark: server time of each page with 50 apps x 3 environments of data.

A real `conveyor up` on SQLite; one GitOps repository for all apps (created with the delivery API),
an open qa promotion PR per app, deploy statuses from "agents", three image tags per app in the
registry, and a history of promotions per app and environment (written through the delivery models:
no API records past promotions). Each page is fetched signed in, like a browser; the server's own
``Server-Timing`` header gives the time spent on the page. Goal: every page under 300 ms server time.

Run: python benchmarks/dashboard_render.py [--apps 50] [--history 20] [--samples 20]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402
from tests.support.server import ServerHandle  # noqa: E402

from benchmarks.common import conveyor_server, git, percentile  # noqa: E402
from conveyor.core import Database, utcnow  # noqa: E402
from conveyor.core.models import EventDelivery  # noqa: E402
from conveyor.delivery.models import App, Promotion, PromotionEvent  # noqa: E402

GOAL_MS = 300.0
ENVS = ("dev", "qa", "prod")


def push_image(api: httpx.Client, name: str, tag: str) -> str:
    descs = []
    for blob, media in ((b'{"os":"linux"}', "application/vnd.oci.image.config.v1+json"),
                        (f"{name}:{tag}".encode() * 64, "application/vnd.oci.image.layer.v1.tar")):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        r = api.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=blob)
        r.raise_for_status()
        descs.append({"mediaType": media, "digest": digest, "size": len(blob)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": descs[0], "layers": descs[1:]}).encode()
    api.put(f"/v2/{name}/manifests/{tag}", content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}).raise_for_status()
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def seed(server: ServerHandle, tmp: Path, apps: int, history: int) -> dict[str, str]:
    api = server.api()
    gitops = "platform-gitops"
    api.post("/api/v1/gitops", json={"repo": gitops}).raise_for_status()
    wc = tmp / "gitops"
    git("clone", "-q", server.git_url(gitops), str(wc))
    names = [f"app{i:02d}" for i in range(apps)]
    for name in names:
        git("checkout", "-q", "-B", f"promote/{name}-qa", "origin/env/qa", cwd=wc)
        (wc / "rendered").mkdir(exist_ok=True)
        (wc / "rendered" / f"{name}.yaml").write_text(f"kind: Deployment\nmetadata:\n  name: {name}\n" * 20)
        git("add", "rendered", cwd=wc)
        git("commit", "-q", "-m", f"{name} to qa", cwd=wc)
    git("push", "-q", "origin", *[f"promote/{n}-qa" for n in names], cwd=wc)
    prs = {}
    for name in names:
        r = api.post(f"/api/v1/repos/{gitops}/pulls",
                     json={"source": f"promote/{name}-qa", "target": "env/qa", "title": f"Promote {name} to qa"})
        r.raise_for_status()
        prs[name] = r.json()["number"]
        api.post(f"/api/v1/repos/{gitops}/statuses/{r.json()['head_sha']}",
                 json={"state": "success", "context": "conveyor/diff", "description": "1 object changed"})
    for env, cluster in (("dev", "nonprod"), ("qa", "nonprod"), ("prod", "prod")):
        tip = git("rev-parse", f"origin/env/{env}", cwd=wc).strip()
        api.post(f"/api/v1/repos/{gitops}/statuses/{tip}",
                 json={"state": "success", "context": f"conveyor/deploy/{cluster}/{env}",
                       "description": f"Ready: {apps} apps applied"}).raise_for_status()
    digests = {(n, v): push_image(api, f"apps/{n}", v) for n in names for v in ("1.0.0", "1.1.0", "1.2.0")}
    db = Database(f"sqlite:///{server.data_dir / 'conveyor.db'}")
    now = utcnow()
    with db.session() as s:
        for name in names:
            s.add(App(name=name, source_repo=name, gitops_repo=gitops))
            for env_i, env in enumerate(ENVS):
                for h in range(history):
                    at = now - timedelta(hours=6 * (history - h) + env_i)
                    version = ("1.0.0", "1.1.0", "1.2.0")[min(2, h * 3 // history)]
                    state = "failed" if h % 7 == 3 else "verified"
                    p = Promotion(app=name, env=env, version=version, state=state, source_repo=name,
                                  source_commit="a" * 40, source_committed_at=at - timedelta(minutes=30),
                                  author="admin", image=f"127.0.0.1/apps/{name}",
                                  image_digest=digests[(name, version)], image_tag=version, gitops_repo=gitops,
                                  created_at=at, updated_at=at, state_since=at,
                                  finished_at=at + timedelta(minutes=10),
                                  failed_at=at + timedelta(minutes=5) if state == "failed" else None)
                    p.events.append(PromotionEvent(at=at, kind="created"))
                    s.add(p)
            s.add(Promotion(app=name, env="qa", version="1.2.0", state="pr_open", source_repo=name,
                            source_commit="b" * 40, author="admin", image=f"127.0.0.1/apps/{name}",
                            image_digest=digests[(name, "1.2.0")], image_tag="1.2.0", gitops_repo=gitops,
                            pr_number=prs[name]))
    db.dispose()
    return {"gitops": gitops, "app": names[len(names) // 2], "pr": str(prs[names[len(names) // 2]])}


def settle(server: ServerHandle, limit: float = 180) -> int:
    """Wait for the server's event backlog from seeding to drain, so pages are timed, not the outbox."""
    db = Database(f"sqlite:///{server.data_dir / 'conveyor.db'}")
    deadline = time.monotonic() + limit
    try:
        while True:
            with db.session() as s:
                pending = s.execute(select(func.count()).select_from(EventDelivery)
                                    .where(EventDelivery.done.is_(False))).scalar_one()
            if pending == 0 or time.monotonic() > deadline:
                return int(pending)
            time.sleep(0.5)
    finally:
        db.dispose()


def signed_in(server: ServerHandle) -> httpx.Client:
    c = httpx.Client(base_url=server.url, timeout=60)
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
    assert csrf
    r = c.post("/login", data={"token": server.admin_token, "csrf": csrf.group(1)})
    if r.status_code != 303:
        raise RuntimeError(f"sign-in failed: {r.status_code}")
    return c


def server_ms(resp: httpx.Response) -> float:
    m = re.search(r"dur=([0-9.]+)", resp.headers.get("server-timing", ""))
    if resp.status_code != 200 or not m:
        raise RuntimeError(f"{resp.request.url}: {resp.status_code} {resp.text[:300]}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", type=int, default=50)
    ap.add_argument("--history", type=int, default=20, help="promotions per app and environment")
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, conveyor_server(Path(d)) as server:
        t0 = time.perf_counter()
        ids = seed(server, Path(d), args.apps, args.history)
        print(f"seeded {args.apps} apps x {len(ENVS)} environments, {args.history} promotions each, "
              f"in {time.perf_counter() - t0:.1f}s")
        left = settle(server)
        print(f"event backlog after settling: {left}")
        pages = ["/", f"/apps/{ids['app']}", "/repos", f"/repos/{ids['gitops']}",
                 f"/repos/{ids['gitops']}/pulls/{ids['pr']}", "/runs", "/clusters", "/registry"]
        c = signed_in(server)
        for p in pages:  # warm-up: imports, template compilation, SQLite page cache
            server_ms(c.get(p))
        print(f"{'page':<40} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'client median ms':>17}  goal")
        worst = 0.0
        for p in pages:
            srv, cli = [], []
            for _ in range(args.samples):
                start = time.perf_counter()
                r = c.get(p)
                cli.append(1000 * (time.perf_counter() - start))
                srv.append(server_ms(r))
            p95 = percentile(srv, 95)
            worst = max(worst, p95)
            print(f"{p:<40} {statistics.median(srv):>10.1f} {p95:>8.1f} {max(srv):>8.1f} "
                  f"{statistics.median(cli):>17.1f}  {'ok' if p95 < GOAL_MS else 'OVER'}")
        # Control: the server's cheapest endpoint (one SELECT 1), to tell page cost from machine noise.
        ctl = []
        for _ in range(args.samples):
            start = time.perf_counter()
            c.get("/healthz").raise_for_status()
            ctl.append(1000 * (time.perf_counter() - start))
        print(f"{'/healthz (control, client time)':<40} {statistics.median(ctl):>10.1f} {percentile(ctl, 95):>8.1f} "
              f"{max(ctl):>8.1f}")
        print(f"worst p95 server time: {worst:.1f} ms (goal < {GOAL_MS:.0f} ms)")


if __name__ == "__main__":
    main()

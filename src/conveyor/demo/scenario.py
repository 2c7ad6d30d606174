"""The workflow's example change, acted out by its people: Dana (developer), Theo (reviewer),
Olga and Omar (cluster administrators)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from conveyor.core import Settings
from conveyor.delivery import PromotionState, probe_endpoint
from conveyor.demo.platform import API_KEY_SECRET, APP, CLUSTERS, GITOPS, DemoError, Platform, git, wait_until
from conveyor.demo.view import Board

PIPELINE_TIMEOUT = 1200
DEPLOY_TIMEOUT = 900
FREEZE_WATCH = 6.0  # seconds the demo watches an approved PR stay unmerged under the stop switch

BROKEN_SERVER_PATCH = '''

def load_config() -> dict[str, str]:
    """Settings the service now needs at start-up (the chart does not provide them yet)."""
    with open(os.environ.get("HELLO_CONFIG", "/etc/hello/config.json")) as f:
        data: dict[str, str] = json.load(f)
    return data
'''


@dataclass
class Outcome:
    prs: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    verified: dict[str, bool] = field(default_factory=dict)
    refused_self_approval: str = ""
    rolled_back: bool = False
    dev_after_rollback: str = ""
    freeze_held: str = ""  # the gate's words while the stop switch held the approved prod PR
    api_keys: dict[str, str] = field(default_factory=dict)  # env -> fingerprint of the API key set there
    api_keys_seen: dict[str, bool] = field(default_factory=dict)  # env -> its pods answered with that one
    risky_qa: list[str] = field(default_factory=list)  # the risk rules qa's promotion of 1.1.0 tripped
    # the base-image refresh: the rebuilt version, where it was verified, qa's extra approvals, and the
    # dev agent's signature verdicts on the revision that runs it
    security_update: dict[str, Any] = field(default_factory=dict)
    # env -> what hello answered through its NodePort: its version and its counter's answer
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)


class Scenario:
    def __init__(self, platform: Platform, board: Board, wc: Path | None = None) -> None:
        self.p = platform
        self.board = board
        self._wc = wc
        self.outcome = Outcome()
        self.settings = Settings(data_dir=platform.data_dir)

    @property
    def wc(self) -> Path:
        """The application repo's working copy (made after the secrets, which the first release needs)."""
        if self._wc is None:
            raise DemoError("the application repository is not created yet")
        return self._wc

    @wc.setter
    def wc(self, path: Path) -> None:
        self._wc = path

    # --- steps ------------------------------------------------------------------------------------
    def app_version(self) -> str:
        data = yaml.safe_load((self.wc / ".conveyor/app.yaml").read_text())
        return str(data["version"])

    def open_change(self, branch: str, version: str, edit: Any, title: str, body: str = "") -> tuple[int, str]:
        git(self.wc, "fetch", "-q", "origin")
        git(self.wc, "checkout", "-q", "-B", branch, "origin/main")
        app_yaml = self.wc / ".conveyor/app.yaml"
        app_yaml.write_text(app_yaml.read_text().replace(f'version: "{self.app_version()}"', f'version: "{version}"'))
        edit(self.wc)
        git(self.wc, "add", "-A")
        git(self.wc, "commit", "-q", "-m", title)
        git(self.wc, "push", "-q", "-f", "origin", branch)
        head = git(self.wc, "rev-parse", "HEAD").strip()
        with self.p.api("dana") as api:
            r = api.post(f"/api/v1/repos/{APP}/pulls", json={"source": branch, "target": "main", "title": title,
                                                             "body": f"Bumps {APP} to {version}.{body}"})
            if r.status_code != 201:
                raise DemoError(f"opening the PR: {r.text}")
            return int(r.json()["number"]), head

    def wait_check(self, repo: str, sha: str, context: str, timeout: float = PIPELINE_TIMEOUT) -> str:
        def done() -> str | None:
            with self.p.api() as api:
                for st in api.get(f"/api/v1/repos/{repo}/statuses/{sha}").json()["statuses"]:
                    if st["context"] == context and st["state"] != "pending":
                        return f"{st['state']}: {st['description']}"
            return None

        result: str = wait_until(f"{context} on {sha[:12]}", done, timeout, 2)
        return result

    def held_by_freeze(self, number: int, version: str) -> str:
        """The approved prod PR's `conveyor/cd/gate` is pending on the stop switch, and stays unmerged."""
        def gate() -> str | None:
            with self.p.api() as api:
                head = api.get(f"/api/v1/repos/{GITOPS}/pulls/{number}").json()["head_sha"]
                for st in api.get(f"/api/v1/repos/{GITOPS}/statuses/{head}").json()["statuses"]:
                    if st["context"] == "conveyor/cd/gate" and "[freeze.stop-switch]" in st["description"]:
                        return str(st["description"])
            return None

        held: str = wait_until("the stop switch on the prod gate", gate, 60, 1)
        time.sleep(FREEZE_WATCH)  # several engine steps: approvals are in, and still nothing merges
        row = self.promotion("prod", version)
        if row is None or row["state"] != PromotionState.PR_OPEN:
            raise DemoError(f"prod moved on during the freeze: {row}")
        return held

    def review(self, repo: str, number: int, user: str) -> tuple[int, dict[str, Any]]:
        with self.p.api(user) as api:
            r = api.post(f"/api/v1/repos/{repo}/pulls/{number}/reviews", json={"state": "approve"})
            return r.status_code, r.json()

    def merge_app_pr(self, number: int, method: str = "merge") -> str:
        with self.p.api("dana") as api:
            r = api.post(f"/api/v1/repos/{APP}/pulls/{number}/merge", json={"method": method})
            if r.status_code != 200:
                raise DemoError(f"merging #{number}: {r.text}")
            return str(r.json()["merge_commit_sha"])

    def promotion(self, env: str, version_prefix: str) -> dict[str, Any] | None:
        with self.p.api() as api:
            rows = api.get("/api/v1/promotions", params={"app": APP, "env": env}).json()
        for row in rows:  # newest first
            if row["version"].startswith(version_prefix + "-") and not row["is_rollback"]:
                return dict(row)
        return None

    def wait_promotion(self, env: str, version: str, states: set[PromotionState], timeout: float = DEPLOY_TIMEOUT
                       ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            row = self.promotion(env, version)
            if row and row["state"] in states:
                return row
            bad = {PromotionState.ABANDONED, PromotionState.SUPERSEDED, PromotionState.ROLLBACK_FAILED}
            if PromotionState.ROLLED_BACK not in states:
                bad |= {PromotionState.FAILED, PromotionState.ROLLING_BACK, PromotionState.ROLLED_BACK}
            if row and row["state"] in bad - states:
                detail = self.p.api().get(f"/api/v1/promotions/{row['id']}").json()
                raise DemoError(f"{env}: promotion of {version} ended {row['state']}: {detail.get('failure_reason')}")
            return None

        result: dict[str, Any] = wait_until(f"{APP} {version} to reach {'/'.join(sorted(states))} in {env}",
                                            reached, timeout, 2)
        return result

    def endpoint(self, env: str) -> dict[str, Any]:
        """hello's GET / as its users get it: through its Service's NodePort on the cluster's node."""
        r = probe_endpoint(self.settings, "prod" if env == "prod" else "nonprod", f"{APP}-{env}", APP, None, "/")
        if r.status != 200:
            raise DemoError(f"{env} endpoint answered {r.status}: {r.error or r.body[:200]}")
        body: dict[str, Any] = json.loads(r.body)
        body["_where"] = r.where
        return body

    def endpoint_version(self, env: str) -> str:
        """hello's version, and what its counter answered (hello calls it by its Service's DNS name)."""
        body = self.endpoint(env)
        counter = body.get("counter") or {}
        self.outcome.endpoints[env] = {"version": body["version"], "counter": counter, "where": body["_where"]}
        said = f"{body['version']} at {body['_where']}"
        if counter.get("ok"):
            return f"{said}; counter answered: {counter.get('hits')} hits"
        return f"{said}; counter did NOT answer: {counter.get('error', 'not reported')}"

    def endpoints_answer(self) -> str:
        """Every environment answers through its NodePort with its version and its counter's answer."""
        for env in ("dev", "qa", "prod"):
            self.endpoint_version(env)
        said = {env: e for env, e in self.outcome.endpoints.items() if env in ("dev", "qa", "prod")}
        missing = [env for env, e in said.items() if not e["counter"].get("ok")]
        if missing:
            raise DemoError(f"hello's counter did not answer in {', '.join(missing)}: {said}")
        return ", ".join(f"{env} {e['version']} (counter: {e['counter'].get('hits')} hits)" for env, e in said.items())

    # --- application secrets -----------------------------------------------------------------------
    SECRET_APPROVERS = {"dev": ("theo",), "qa": ("theo",), "prod": ("olga", "omar")}

    def set_api_keys(self) -> None:
        """Dana sets hello's API key per environment with `conveyor env secret set`: encrypted to the
        environment's cluster key, proposed as a PR to its branch (keys and fingerprints only), approved
        by someone else, merged, and decrypted and applied by that cluster's agent."""
        for env in self.p.secret_envs():
            value = secrets.token_urlsafe(18)
            self.board.run(f"{env}: Dana sets hello's API key (encrypted to the cluster, by PR)",
                           self.set_api_key, env, value)
            self.outcome.api_keys[env] = "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]

    def set_api_key(self, env: str, value: str) -> str:
        said = self.p.cli("env", "secret", "set", APP, env, API_KEY_SECRET, "--key", "api-key", user="dana",
                          stdin=value)
        found = re.search(r"PR #(\d+)", said)
        if not found:
            raise DemoError(f"`conveyor env secret set` said: {said}")
        number = int(found.group(1))
        for user in self.SECRET_APPROVERS.get(env, ("theo",)):
            code, body = self.review(GITOPS, number, user)
            if code != 201:
                raise DemoError(f"{user}'s approval of secret PR #{number} was refused: {body}")

        def merged() -> str | None:
            with self.p.api("dana") as api:
                r = api.post(f"/api/v1/repos/{GITOPS}/pulls/{number}/merge", json={"method": "merge"})
                return str(r.json()["merge_commit_sha"]) if r.status_code == 200 else None

        sha: str = wait_until(f"secret PR #{number} to merge", merged, 120, 2)
        self.wait_deployed(sha)
        return f"PR #{number} merged, applied"

    def wait_deployed(self, sha: str) -> None:
        def applied() -> bool:
            with self.p.api() as api:
                statuses = api.get(f"/api/v1/repos/{GITOPS}/statuses/{sha}").json()["statuses"]
            deploys = [s for s in statuses if s["context"].startswith("conveyor/deploy/")]
            if any(s["state"] in ("failure", "error") for s in deploys):
                raise DemoError(f"the agent refused {sha[:12]}: {deploys}")
            return any(s["state"] == "success" for s in deploys)

        wait_until(f"the agent to apply {sha[:12]}", applied, DEPLOY_TIMEOUT, 2)

    def api_keys_answer(self) -> str:
        """Each environment's pods read their own environment's key (hello reports its fingerprint)."""
        for env, expected in self.outcome.api_keys.items():
            got = self.endpoint(env).get("api_key")
            if got != expected:
                raise DemoError(f"{env} answers API key {got}, expected {expected}")
            self.outcome.api_keys_seen[env] = True
        return ", ".join(f"{env} {fp}" for env, fp in self.outcome.api_keys.items())

    # --- the story ----------------------------------------------------------------------------------
    def first_release(self) -> str:
        version = self.app_version()
        merge = git(self.wc, "rev-parse", "HEAD").strip()
        self.board.run(f"CI builds {version} from the first commit", self.wait_check, APP, merge, "conveyor/ci")
        row = self.board.run(f"{version} deployed to dev", self.wait_promotion, "dev", version,
                             {PromotionState.VERIFIED})
        return f"{row['version']} verified in dev"

    def change(self) -> None:
        version = "1.1.0"

        def edit(wc: Path) -> None:
            server = wc / "hello/server.py"
            server.write_text(server.read_text().replace(
                '        elif self.path == "/healthz":\n',
                '        elif self.path == "/greeting":\n'
                '            self._send(200, {"greeting": "Hello, GitOps!"})\n'
                '        elif self.path == "/healthz":\n'))
            test = wc / "tests/test_server.py"
            test.write_text(test.read_text().replace(
                "\n\nif __name__",
                "\n    def test_greeting(self) -> None:\n"
                '        self.assertEqual(self.get("/greeting"), (200, {"greeting": "Hello, GitOps!"}))\n'
                "\n\nif __name__"))

        # A `Security:` trailer (kept by the squash merge) makes it a risky change: qa asks one more approval.
        number, head = self.board.run("Dana opens a PR: hello 1.1.0", self.open_change, "greeting", version, edit,
                                  "Greet GitOps users", "\n\nSecurity: escapes the greeting's input (demo)")
        self.outcome.prs["app"] = number
        self.board.links.append(f"app PR #{number}: {self.p.url}/repos/{APP}/pulls/{number}   "
                                f"promotion board: {self.p.url}/apps/{APP}   clusters: {self.p.url}/clusters")
        result = self.board.run(f"PR pipeline on #{number}", self.wait_check, APP, head, "conveyor/pr")
        if not result.startswith("success"):
            raise DemoError(f"the PR pipeline failed: {result}")
        self.board.run("Theo approves, Dana squash-merges", lambda: (self.review(APP, number, "theo"),
                                                                 self.merge_app_pr(number, "squash"))[1])
        merge = self.promotion_source_commit(number)
        result = self.board.run("CI pushes the image and templates", self.wait_check, APP, merge, "conveyor/ci")
        if not result.startswith("success"):
            raise DemoError(f"CI failed: {result}")
        dev = self.board.run("dev: GitOps PR merges itself, agent applies", self.wait_promotion, "dev", version,
                         {PromotionState.VERIFIED})
        self.outcome.prs["dev"] = dev["pr_number"]
        self.outcome.verified["dev"] = True
        got = self.board.run("dev endpoint answers", self.endpoint_version, "dev")
        if not got.startswith(version):
            raise DemoError(f"dev answers {got}, expected {version}")
        qa = self.board.run("qa: PR waits for a reviewer", self.wait_promotion, "qa", version,
                            {PromotionState.PR_OPEN})
        self.outcome.prs["qa"] = qa["pr_number"]
        detail = self.p.api().get(f"/api/v1/promotions/{qa['id']}").json()
        self.outcome.risky_qa = [r["rule"] for r in detail.get("risk") or []]
        if detail.get("extra_approvals") != 1:
            raise DemoError(f"qa's promotion of a `Security:` change asks no extra approval: {detail}")
        self.board.passed(f"qa: a risky change ({', '.join(self.outcome.risky_qa)}): two approvals")
        for user in ("theo", "olga"):
            code, body = self.review(GITOPS, qa["pr_number"], user)
            if code != 201:
                raise DemoError(f"{user}'s approval of qa PR #{qa['pr_number']} was refused: {body}")
        self.board.run(f"qa: Theo and Olga approved #{qa['pr_number']}; deployed and verified", self.wait_promotion,
                       "qa", version, {PromotionState.VERIFIED})
        self.outcome.verified["qa"] = True
        prod = self.board.run("prod: PR needs two cluster admins", self.wait_promotion, "prod", version,
                              {PromotionState.PR_OPEN})
        self.outcome.prs["prod"] = prod["pr_number"]
        code, body = self.review(GITOPS, prod["pr_number"], "dana")
        if code != 403:
            raise DemoError(f"Dana's own approval of the prod PR was not refused ({code})")
        self.outcome.refused_self_approval = str(body.get("detail"))
        self.board.passed(f"prod: Dana's own approval refused ({body.get('rule')})")
        self.p.cli("freeze", "start", "--env", "prod", "--reason", "demo: change freeze on prod", user="olga")
        for admin in ("olga", "omar"):
            code, body = self.review(GITOPS, prod["pr_number"], admin)
            if code != 201:
                raise DemoError(f"{admin}'s approval was refused: {body}")
        self.outcome.freeze_held = self.board.run("prod: approved, but Olga's stop switch holds the merge",
                                                  self.held_by_freeze, prod["pr_number"], version)
        self.p.cli("freeze", "end", "--env", "prod", "--reason", "demo: freeze lifted", user="olga")
        self.board.run(f"prod: freeze lifted; #{prod['pr_number']} merged and verified", self.wait_promotion, "prod",
                   version, {PromotionState.VERIFIED})
        self.outcome.verified["prod"] = True
        self.outcome.versions["good"] = version
        self.board.run("hello answers in dev, qa, prod (NodePort), each with its counter's answer",
                       self.endpoints_answer)
        if self.outcome.api_keys:
            self.board.run("each environment's pods read their own API key (fingerprints)", self.api_keys_answer)

    def broken_change(self) -> None:
        version = "1.2.0"

        def edit(wc: Path) -> None:
            server = wc / "hello/server.py"
            main = "\n\ndef main() -> None:"
            text = server.read_text().replace(main, BROKEN_SERVER_PATCH + main)
            text = text.replace("    server = make_server(args.port)\n",
                                "    load_config()\n    server = make_server(args.port)\n")
            server.write_text(text)

        number, head = self.board.run("Dana opens a second PR: hello 1.2.0", self.open_change, "config", version, edit,
                                  "Read settings from a config file")
        self.outcome.prs["broken"] = number
        result = self.board.run(f"PR pipeline on #{number}", self.wait_check, APP, head, "conveyor/pr")
        if not result.startswith("success"):
            raise DemoError(f"the PR pipeline failed: {result}")
        self.board.run("Theo approves, Dana merges", lambda: (self.review(APP, number, "theo"),
                                                          self.merge_app_pr(number))[1])
        merge = self.promotion_source_commit(number)
        self.board.run("CI builds 1.2.0", self.wait_check, APP, merge, "conveyor/ci")
        row = self.board.run("dev: 1.2.0 fails and is rolled back", self.wait_promotion, "dev", version,
                         {PromotionState.ROLLED_BACK})
        self.outcome.rolled_back = True
        self.outcome.prs["rollback"] = row["rollback_pr_number"]
        got = self.board.run("dev answers with the previous version again", self.endpoint_version, "dev")
        self.outcome.dev_after_rollback = got
        if not got.startswith(self.outcome.versions.get("good", "1.1.0")):
            raise DemoError(f"after the rollback dev answers {got}")

    def security_update(self) -> None:
        """A base-image refresh (`conveyor image base --refresh`: debootstrap again, same tag, new digest)
        rebuilds hello on its default branch tip; the release carries the security-update label to dev
        (auto-merged) and qa, where `risk` asks for one more approval; the agents verify its signature."""
        merge = self.board.run("the admin refreshes the Debian base image (same tag, new digest)",
                               lambda: self.p.cli("image", "base", "--refresh").strip())
        self.outcome.versions["base"] = merge

        def rebuild() -> dict[str, Any] | None:
            with self.p.api() as api:
                found = [r for r in api.get("/api/v1/runs", params={"repo": APP}).json()
                         if r["trigger"] == "base-image"]
            return found[0] if found and found[0]["state"] in ("success", "failure", "error") else None

        run = self.board.run("CI rebuilds hello on the new base (security update)", wait_until,
                             "the security rebuild of hello", rebuild, PIPELINE_TIMEOUT, 3)
        if run["state"] != "success":
            raise DemoError(f"the security rebuild failed: {run['message']}")
        version = f"{self.app_version_at_main()}-{run['number']}"
        dev = self.board.run(f"dev: {version} (security update) deployed, signature verified",
                             self.wait_promotion_exact, "dev", version, {PromotionState.VERIFIED})
        qa = self.board.run("qa: the security update needs one more approval", self.wait_promotion_exact, "qa",
                            version, {PromotionState.PR_OPEN})
        detail = self.p.api().get(f"/api/v1/promotions/{qa['id']}").json()
        if not detail.get("security_update") or detail.get("extra_approvals") != 1:
            raise DemoError(f"qa's promotion of the rebuild is not marked a security update: {detail}")
        for user in ("theo", "olga"):
            code, body = self.review(GITOPS, qa["pr_number"], user)
            if code != 201:
                raise DemoError(f"{user}'s approval was refused: {body}")
        self.board.run("qa: Theo and Olga approved; verified", self.wait_promotion_exact, "qa", version,
                       {PromotionState.VERIFIED})
        self.outcome.security_update = {
            "version": version, "base_digest": merge, "dev": dev["state"] == PromotionState.VERIFIED, "qa": True,
            "qa_extra_approvals": detail.get("extra_approvals"), "signatures": self.dev_signatures()}

    def dev_signatures(self) -> list[dict[str, Any]]:
        """What dev's agent found when it checked the images of the revision it applied."""
        url = next((self.p.agent_status_urls.get(c) for c, envs in CLUSTERS.items() if "dev" in envs), None)
        if url is None:  # dev runs on Flux, which verifies nothing
            return []
        doc = httpx.get(url, timeout=10).json()
        sync: dict[str, Any] = next((s for s in doc.get("syncs", []) if s.get("name") == "dev"), {})
        return list(sync.get("signatures") or [])

    def app_version_at_main(self) -> str:
        git(self.wc, "fetch", "-q", "origin")
        return str(yaml.safe_load(git(self.wc, "show", "origin/main:.conveyor/app.yaml"))["version"])

    def wait_promotion_exact(self, env: str, version: str, states: set[PromotionState]) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            with self.p.api() as api:
                rows = api.get("/api/v1/promotions", params={"app": APP, "env": env}).json()
            row = next((r for r in rows if r["version"] == version and not r["is_rollback"]), None)
            return dict(row) if row and row["state"] in states else None

        found: dict[str, Any] = wait_until(f"{APP} {version} in {env}", reached, DEPLOY_TIMEOUT, 2)
        return found

    def promotion_source_commit(self, number: int) -> str:
        with self.p.api() as api:
            return str(api.get(f"/api/v1/repos/{APP}/pulls/{number}").json()["merge_commit_sha"])

    def summary(self) -> list[dict[str, str]]:
        with self.p.api() as api:
            envs = api.get(f"/api/v1/apps/{APP}").json()
        rows = []
        for e in envs:
            lead = e["lead_time_seconds"]
            rows.append({"env": e["env"], "version": e["version"] or "-", "commit": e["commit"] or "-",
                         "digest": e["image_digest"] or "-", "health": "verified" if e["version"] else "-",
                         "lead_time": "-" if lead is None else f"{int(lead) // 60}m{int(lead) % 60:02d}s"})
        return rows

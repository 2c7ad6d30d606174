"""Runs on real servers (SQLite and PostgreSQL) and their runners: `run:` steps in containers of the
tests' shell image (tests/support/images.py), the queue, leases, cancellation, timeouts, recovery."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conveyor.core import containers
from tests.conftest import BACKENDS
from tests.pipelines.helpers import (
    log_text,
    repo_with_pipeline,
    run_detail,
    runs,
    wait_for_run,
    wait_for_status,
)
from tests.support.bad_input import alias_bomb
from tests.support.server import ServerHandle

STEPS_OK = """\
ci:
  - name: first
    run: echo "one $CONVEYOR_BUILD_NUMBER"; echo "sha=$CONVEYOR_COMMIT"
  - name: second
    run: |
      test -f .conveyor/pipeline.yaml
      echo two
  - name: third
    run: pwd
    working_directory: sub
"""


def run_containers(server: ServerHandle, run_id: int) -> list[str]:
    """Containers of a run still present in the server's pipeline container storage."""
    root = str(server.data_dir / "pipelines" / "containers")
    p = subprocess.run(containers.podman("ps", "-a", "--format", "{{.Names}}", root=root),
                       capture_output=True, text=True, timeout=60)
    return [n for n in p.stdout.split() if n.startswith(f"conveyor-run-{run_id}-")]


def test_push_to_default_branch_runs_ci_steps_in_order(server: ServerHandle, tmp_path: Path) -> None:
    wc, sha = repo_with_pipeline(server, tmp_path, STEPS_OK, {"sub/keep.txt": "x\n"})
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "success", run
    assert [(s["name"], s["state"]) for s in run["steps"]] == [
        ("setup", "success"), ("first", "success"), ("second", "success"), ("third", "success")]
    log = log_text(server, run["id"])
    assert log.index("one ") < log.index("two") < log.index("/sub")
    assert f"sha={sha}" in log
    status = wait_for_status(server, wc.repo, sha, "conveyor/ci", "success")
    assert status["target_url"].endswith(f"/api/v1/runs/{run['id']}") and status["creator"] == "conveyor-pipelines"
    # The CLI shows the same.
    out = server.cli("run", "show", str(run["id"])).stdout
    assert "success" in out and "third" in out
    assert server.cli("run", "logs", str(run["id"])).stdout == log
    # A push to another branch runs nothing.
    wc.git("checkout", "-q", "-b", "topic")
    other = wc.commit_file("x.txt", "x\n")
    assert wc.push("topic")[0] == 0
    assert wc.push("main")[0] == 0  # and the same commit again on main is a new ci run
    wait_for_run(server, wc.repo, other, "ci")
    assert [r["sha"] for r in runs(server, wc.repo)].count(other) == 1


def test_failed_step_stops_the_run_and_fails_the_status(server: ServerHandle, tmp_path: Path) -> None:
    pipeline = ("ci:\n  - run: echo before\n  - name: tests\n    run: |\n      echo 'AssertionError: 1 != 2'\n"
                "      exit 3\n  - name: never\n    run: echo never-printed\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "failure" and run["failed_step"] == "tests"
    assert "exited with code 3" in run["message"] and "AssertionError: 1 != 2" in run["message"]
    assert [s["state"] for s in run["steps"]] == ["success", "success", "failure", "skipped"]
    assert run["steps"][3]["message"] == "not run: 'tests' failure"
    assert "never-printed" not in log_text(server, run["id"])
    status = wait_for_status(server, wc.repo, sha, "conveyor/ci", "failure")
    assert "tests" in status["description"] and "exited with code 3" in status["description"]


@pytest.mark.parametrize(
    ("pipeline", "where"),
    [
        ("ci:\n  - run: echo\n  - uses: no-such-task\n", ".conveyor/pipeline.yaml:3:11: unknown task 'no-such-task'"),
        ("ci:\n  - run: [oops\n", ".conveyor/pipeline.yaml:3:1: invalid YAML"),
        # Issue 13: a few hundred bytes of nested aliases once stalled the server ~20 s at 1.3 GB.
        (alias_bomb(), ".conveyor/pipeline.yaml:7:10: aliases expand to more than 100000 nodes"),
        (b"ci:\n  - run: echo caf\xe9\n", ".conveyor/pipeline.yaml:2:18: not UTF-8 text (byte 0xe9)"),
        ("ci:\n  - run: " + "[" * 500 + "]" * 500 + "\n", ".conveyor/pipeline.yaml:2:71: nested deeper than 64"),
    ],
)
def test_invalid_pipeline_file_fails_at_once(
    server: ServerHandle, tmp_path: Path, pipeline: str | bytes, where: str
) -> None:
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "failure" and run["failed_step"] == "setup"
    assert run["message"].startswith(where), run["message"]
    assert [s["name"] for s in run["steps"]] == ["setup"]
    status = wait_for_status(server, wc.repo, sha, "conveyor/ci", "failure")
    assert where in status["description"]


def test_timeout_kills_the_whole_step(server: ServerHandle, tmp_path: Path) -> None:
    pipeline = ("ci:\n  - name: hangs\n    timeout: 2s\n    run: |\n      sleep 300 &\n"
                "      echo started\n      sleep 301\n  - run: echo after\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "failure" and run["failed_step"] == "hangs"
    assert "timed out after 2s" in run["message"]
    # The step's container went with it, background process and all.
    assert run_containers(server, run["id"]) == []
    assert [s["state"] for s in run["steps"]] == ["success", "failure", "skipped"]
    assert "-- step 2: echo after not run" in log_text(server, run["id"])


def test_flooding_output_is_stopped_and_the_queue_keeps_serving(server: ServerHandle, tmp_path: Path) -> None:
    pipeline = "ci:\n  - name: flood\n    run: yes 'flood flood flood'\n  - run: echo unreachable\n"
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "failure" and run["failed_step"] == "flood"
    assert "wrote more than 10 MiB of output" in run["message"]
    log = log_text(server, run["id"])
    assert 10 * 1024 * 1024 <= len(log.encode()) < 11 * 1024 * 1024
    # Another repository's run is served normally afterwards.
    wc2, sha2 = repo_with_pipeline(server, tmp_path / "second", STEPS_OK, {"sub/keep.txt": "x\n"})
    assert wait_for_run(server, wc2.repo, sha2, "ci")["state"] == "success"


def test_secrets_reach_steps_and_are_masked(server: ServerHandle, tmp_path: Path) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    wc, _ = repo_with_pipeline(server, tmp_path, "pr:\n  - run: 'true'\n")
    # Marked for every pipeline: this repository's main is not protected, so a secret of the default
    # scope would reach none of its runs (tests/security covers that).
    r = server.api().put(f"/api/v1/repos/{wc.repo}/secrets/DEPLOY_KEY", json={"value": value, "scope": "all"})
    assert r.status_code == 204, r.text
    assert server.api().get(f"/api/v1/repos/{wc.repo}/secrets").json() == [{"name": "DEPLOY_KEY", "scope": "all"}]
    (wc.path / ".conveyor/pipeline.yaml").write_text(
        "ci:\n  - name: uses secret\n    env:\n      KEY: ${{ secrets.DEPLOY_KEY }}\n"
        "    run: |\n      echo \"key is $KEY\"\n      test \"$KEY\" = '" + value + "'\n"
        "      echo \"$KEY\" | rev | rev\n"
        "      echo \"$KEY\" | base64\n"
        "  - name: unknown secret\n    env: {X: '${{ secrets.NOPE }}'}\n    run: 'true'\n")
    sha = wc.commit_file(".conveyor/pipeline.yaml", (wc.path / ".conveyor/pipeline.yaml").read_text())
    assert wc.push("main")[0] == 0
    run = wait_for_run(server, wc.repo, sha, "ci")
    log = log_text(server, run["id"])
    assert value not in log and "key is ***" in log
    assert base64.b64encode(value.encode()).decode().rstrip("=") not in log  # the common encodings too
    assert run["steps"][1]["state"] == "success"  # the value itself reached the step
    assert run["failed_step"] == "unknown secret" and "'NOPE'" in run["message"]


def test_cancel_stops_a_running_step_and_retry_queues_a_new_run(server: ServerHandle, tmp_path: Path) -> None:
    pipeline = "ci:\n  - name: long\n    run: echo waiting; sleep 600\n"
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci", state="running")
    while "waiting" not in log_text(server, run["id"]):
        pass
    assert run_containers(server, run["id"]), "the step should be running in a container"
    server.cli("run", "cancel", str(run["id"]))
    done = wait_for_run(server, wc.repo, sha, "ci")
    assert done["state"] == "cancelled" and done["steps"][1]["state"] == "cancelled"
    assert run_containers(server, run["id"]) == []
    wait_for_status(server, wc.repo, sha, "conveyor/ci", "error")
    p = server.cli("run", "cancel", str(run["id"]), check=False)
    assert p.returncode != 0 and "run.finished" in p.stderr
    new_id = int(server.cli("run", "retry", str(run["id"])).stdout.strip())
    retried = run_detail(server, new_id)
    assert retried["retry_of"] == run["id"] and retried["sha"] == sha and retried["number"] > run["number"]
    server.cli("run", "cancel", str(new_id))
    assert wait_for_run(server, wc.repo, sha, "ci")["state"] == "cancelled"


def test_follow_streams_the_log_until_the_end(server: ServerHandle, tmp_path: Path) -> None:
    pipeline = "ci:\n  - run: for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done\n"
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci", finished=False)
    out = server.cli("run", "logs", str(run["id"]), "--follow").stdout
    assert [ln for ln in out.splitlines() if ln.startswith("line-")] == [f"line-{i}" for i in range(1, 6)]
    assert out.rstrip().endswith("== run success")
    # The same log over server-sent events.
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"},
                      timeout=60) as c, c.stream("GET", f"/api/v1/runs/{run['id']}/logs/stream") as resp:
        body = "".join(resp.iter_text())
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert body.count("event: log") >= 1 and "line-5" in body and body.rstrip().endswith('data: {"state": "success"}')


def test_pull_request_runs_pr_pipeline_and_gates_merge(server: ServerHandle, tmp_path: Path) -> None:
    pipeline = "pr:\n  - name: check\n    run: test -f ok.txt\nci:\n  - include: pr\n"
    wc, _ = repo_with_pipeline(server, tmp_path, pipeline, {"ok.txt": "ok\n"})
    server.cli("repo", "protect", wc.repo, "main", "--approvals", "0", "--require-check", "conveyor/pr")
    wc.git("checkout", "-q", "-b", "feature")
    wc.git("rm", "-q", "ok.txt")
    wc.git("commit", "-q", "-m", "break")
    bad = wc.head()
    assert wc.push("feature")[0] == 0
    number = int(server.cli("pr", "create", wc.repo, "--from", "feature", "--to", "main", "--title", "x").stdout)
    run = wait_for_run(server, wc.repo, bad, "pr")
    assert run["state"] == "failure" and run["pr_number"] == number
    wait_for_status(server, wc.repo, bad, "conveyor/pr", "failure")
    p = server.cli("pr", "merge", wc.repo, str(number), check=False)
    assert p.returncode != 0 and "check.failed" in p.stderr
    good = wc.commit_file("ok.txt", "fixed\n")
    assert wc.push("feature")[0] == 0
    assert wait_for_run(server, wc.repo, good, "pr")["state"] == "success"
    wait_for_status(server, wc.repo, good, "conveyor/pr", "success")
    server.cli("pr", "merge", wc.repo, str(number))
    merge_sha = server.api().get(f"/api/v1/repos/{wc.repo}/pulls/{number}").json()["merge_commit_sha"]
    assert wait_for_run(server, wc.repo, merge_sha, "ci")["state"] == "success"
    wait_for_status(server, wc.repo, merge_sha, "conveyor/ci", "success")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_runner_with_only_url_and_token_serves_the_queue(backend: str, server_factory: Callable[..., ServerHandle],
                                                         tmp_path: Path) -> None:
    server = server_factory(backend, CONVEYOR_PIPELINE_WORKERS="0")
    wc, sha = repo_with_pipeline(server, tmp_path, STEPS_OK, {"sub/keep.txt": "x\n"})
    assert wait_for_run(server, wc.repo, sha, "ci", finished=False)["state"] == "queued"
    name = f"remote-{uuid.uuid4().hex[:8]}"
    token = server.api().post("/api/v1/runners", json={"name": name}).json()["token"]
    # No data dir, no database URL: nothing but the server's URL and the runner's token.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    runner = start_runner(server, token, tmp_path, env)
    try:
        run = wait_for_run(server, wc.repo, sha, "ci")
        assert run["state"] == "success" and run["runner"] == name, (tmp_path / "runner.log").read_text()
        assert f"on {name}" in log_text(server, run["id"]).splitlines()[0]
        wait_for_status(server, wc.repo, sha, "conveyor/ci", "success")
        listed = {r["name"]: r for r in server.api().get("/api/v1/runners").json()}
        assert listed[name]["last_seen_at"] is not None
    finally:
        runner.terminate()
        runner.wait(30)


def start_runner(server: ServerHandle, token: str, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(tmp_path / "runner.log", "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "conveyor", "runner", "--server", server.url, "--token", token,
                             "--concurrency", "1", "--work-dir", str(tmp_path / "runner"),
                             "--default-image", "cache/shell:1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_of_a_runner_loses_no_run(backend: str, server_factory: Callable[..., ServerHandle],
                                         tmp_path: Path) -> None:
    server = server_factory(backend, CONVEYOR_PIPELINE_WORKERS="0")
    pipeline = ("ci:\n  - name: flaky\n    run: |\n      if [ \"$CONVEYOR_RUN_ATTEMPT\" = 1 ]; then echo first; "
                "sleep 600; fi\n      echo second attempt\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    token = server.api().post("/api/v1/runners", json={"name": f"k9-{uuid.uuid4().hex[:8]}"}).json()["token"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    runner = start_runner(server, token, tmp_path, env)
    run = wait_for_run(server, wc.repo, sha, "ci", state="running")
    while "first" not in log_text(server, run["id"]):
        pass
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait(10)
    # Started again, the runner recovers the run its dead instance held and removes its container.
    runner = start_runner(server, token, tmp_path, env)
    try:
        done = wait_for_run(server, wc.repo, sha, "ci")
        assert done["id"] == run["id"] and done["state"] == "success" and done["attempt"] == 2
        assert "second attempt" in log_text(server, run["id"])
        assert run_containers_in(tmp_path / "runner" / "containers", run["id"]) == []
    finally:
        runner.terminate()
        runner.wait(30)


def run_containers_in(root: Path, run_id: int) -> list[str]:
    p = subprocess.run(containers.podman("ps", "-a", "--format", "{{.Names}}", root=str(root)),
                       capture_output=True, text=True, timeout=60)
    return [n for n in p.stdout.split() if n.startswith(f"conveyor-run-{run_id}-")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_interrupted_by_a_crash_is_requeued_on_restart(backend: str, server_factory: Callable[..., ServerHandle],
                                                            tmp_path: Path) -> None:
    server = server_factory(backend)
    pipeline = ("ci:\n  - name: flaky\n    run: |\n      if [ \"$CONVEYOR_RUN_ATTEMPT\" = 1 ]; then echo first; "
                "sleep 600; fi\n      echo second attempt\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci", state="running")
    while "first" not in log_text(server, run["id"]):
        pass
    server.kill()
    server.start()
    done = wait_for_run(server, wc.repo, sha, "ci")
    assert done["id"] == run["id"] and done["state"] == "success" and done["attempt"] == 2
    # What the first attempt still had running when the server died was removed on restart.
    assert run_containers(server, run["id"]) == []
    log = log_text(server, run["id"])
    assert "attempt 1" in log and "attempt 2" in log and "second attempt" in log
    wait_for_status(server, wc.repo, sha, "conveyor/ci", "success")

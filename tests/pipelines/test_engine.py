"""The engine and queue against real servers on SQLite and PostgreSQL, with host `run:` steps."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


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
    assert [s["state"] for s in run["steps"]] == ["success", "success", "failure", "pending"]
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


def test_timeout_kills_the_whole_process_group(server: ServerHandle, tmp_path: Path) -> None:
    marker = tmp_path / f"pids-{uuid.uuid4().hex}"
    pipeline = (f"ci:\n  - name: hangs\n    timeout: 2s\n    run: |\n      sleep 300 &\n"
                f"      echo $! > {marker}\n      echo started\n      sleep 301\n  - run: echo after\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "failure" and run["failed_step"] == "hangs"
    assert "timed out after 2s" in run["message"]
    background = int(marker.read_text())
    assert not pid_alive(background), "the step's background process survived its timeout"
    assert [s["state"] for s in run["steps"]] == ["success", "failure", "pending"]
    assert "-- step 2:" not in log_text(server, run["id"])


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
    r = server.api().put(f"/api/v1/repos/{wc.repo}/secrets/DEPLOY_KEY", json={"value": value})
    assert r.status_code == 204, r.text
    assert server.api().get(f"/api/v1/repos/{wc.repo}/secrets").json() == ["DEPLOY_KEY"]
    (wc.path / ".conveyor/pipeline.yaml").write_text(
        "ci:\n  - name: uses secret\n    env:\n      KEY: ${{ secrets.DEPLOY_KEY }}\n"
        "    run: |\n      echo \"key is $KEY\"\n      test \"$KEY\" = '" + value + "'\n"
        "      echo \"$KEY\" | rev | rev\n"
        "  - name: unknown secret\n    env: {X: '${{ secrets.NOPE }}'}\n    run: 'true'\n")
    sha = wc.commit_file(".conveyor/pipeline.yaml", (wc.path / ".conveyor/pipeline.yaml").read_text())
    assert wc.push("main")[0] == 0
    run = wait_for_run(server, wc.repo, sha, "ci")
    log = log_text(server, run["id"])
    assert value not in log and "key is ***" in log
    assert run["steps"][1]["state"] == "success"  # the value itself reached the step
    assert run["failed_step"] == "unknown secret" and "'NOPE'" in run["message"]


def test_cancel_stops_a_running_step_and_retry_queues_a_new_run(server: ServerHandle, tmp_path: Path) -> None:
    marker = tmp_path / f"pid-{uuid.uuid4().hex}"
    pipeline = f"ci:\n  - name: long\n    run: echo $$ > {marker}; echo waiting; sleep 600\n"
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci", state="running")
    while "waiting" not in log_text(server, run["id"]):
        pass
    server.cli("run", "cancel", str(run["id"]))
    done = wait_for_run(server, wc.repo, sha, "ci")
    assert done["state"] == "cancelled" and done["steps"][1]["state"] == "cancelled"
    assert not pid_alive(int(marker.read_text()))
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
def test_separate_worker_process_serves_the_queue(backend: str, server_factory: Callable[..., ServerHandle],
                                                  tmp_path: Path) -> None:
    server = server_factory(backend, CONVEYOR_PIPELINE_WORKERS="0")
    wc, sha = repo_with_pipeline(server, tmp_path, STEPS_OK, {"sub/keep.txt": "x\n"})
    assert wait_for_run(server, wc.repo, sha, "ci", finished=False)["state"] == "queued"
    env = server.env()
    if server.database_url:
        env["CONVEYOR_DATABASE_URL"] = server.database_url
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "conveyor", "worker", "--data-dir", str(server.data_dir),
                               "--server-url", server.url, "--concurrency", "1"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run = wait_for_run(server, wc.repo, sha, "ci")
        assert run["state"] == "success", (tmp_path / "worker.log").read_text()
        assert f":{worker.pid}" in log_text(server, run["id"]).splitlines()[0]
        wait_for_status(server, wc.repo, sha, "conveyor/ci", "success")
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_interrupted_by_a_crash_is_requeued_on_restart(backend: str, server_factory: Callable[..., ServerHandle],
                                                            tmp_path: Path) -> None:
    server = server_factory(backend)
    marker = tmp_path / f"attempted-{uuid.uuid4().hex}"
    pipeline = (f"ci:\n  - name: flaky\n    run: |\n      if [ ! -e {marker} ]; then sleep 600 & echo $! > {marker}; "
                f"echo first; wait; fi\n      echo second attempt\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline)
    run = wait_for_run(server, wc.repo, sha, "ci", state="running")
    while "first" not in log_text(server, run["id"]):
        pass
    server.kill()
    server.start()
    done = wait_for_run(server, wc.repo, sha, "ci")
    assert done["id"] == run["id"] and done["state"] == "success" and done["attempt"] == 2
    # What the first attempt's step still had running when the server died was ended on restart.
    assert not pid_alive(int(marker.read_text()))
    log = log_text(server, run["id"])
    assert "attempt 1" in log and "attempt 2" in log and "second attempt" in log
    wait_for_status(server, wc.repo, sha, "conveyor/ci", "success")



"""`needs:` (independent steps at once, failures skipping exactly their dependents) and CI at a cadence
(merges collected into one run of the tip that lists every commit it includes), on a real server."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from tests.pipelines.helpers import log_text, repo_with_pipeline, runs, wait_for_run
from tests.support.server import ServerHandle

DAG = """\
ci:
  - {name: slow, run: "sleep 3; echo slow-done"}
  - {name: quick, run: echo quick-done}
  - {name: after-slow, needs: [slow], run: echo after-slow-done}
  - {name: broken, needs: [quick], run: "echo broken; exit 4"}
  - {name: after-broken, needs: [broken], run: echo never}
"""


def at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_needs_run_independent_steps_at_once_and_skip_only_the_dependents_of_a_failure(
        server: ServerHandle, tmp_path: Path) -> None:
    wc, sha = repo_with_pipeline(server, tmp_path, DAG)
    run = wait_for_run(server, wc.repo, sha, "ci")
    steps = {s["name"]: s for s in run["steps"]}
    assert run["state"] == "failure" and run["failed_step"] == "broken" and "exited with code 4" in run["message"]
    assert [steps[n]["state"] for n in ("slow", "quick", "after-slow", "broken", "after-broken")] == [
        "success", "success", "success", "failure", "skipped"]
    assert steps["after-broken"]["message"] == "not run: needs 'broken', which failure"
    assert steps["after-slow"]["needs"] == ["slow"]
    # quick (and broken, which needs only quick) did not wait for slow; after-slow waited for it.
    assert at(steps["quick"]["finished_at"]) < at(steps["slow"]["finished_at"])
    assert at(steps["broken"]["started_at"]) < at(steps["slow"]["finished_at"])
    assert at(steps["after-slow"]["started_at"]) >= at(steps["slow"]["finished_at"])
    log = log_text(server, run["id"])
    assert "after-slow-done" in log and "never" not in log.replace("not run", "")


BATCHED = """\
ci:
  trigger: batch
  batch: {window: 3s}
  steps:
    - run: echo "building $CONVEYOR_COMMIT"
"""


def test_batched_ci_builds_the_tip_of_three_merges_once_and_lists_every_commit(
        server: ServerHandle, tmp_path: Path) -> None:
    wc, first = repo_with_pipeline(server, tmp_path, BATCHED)
    second = wc.commit_file("a.txt", "a\n")
    assert wc.push("main")[0] == 0
    third = wc.commit_file("b.txt", "b\n")
    assert wc.push("main")[0] == 0
    run = wait_for_run(server, wc.repo, third, "ci", limit=120)
    assert run["state"] == "success" and run["trigger"] == "batch"
    assert [r["sha"] for r in runs(server, wc.repo)] == [third]  # one run, for the tip
    assert run["commits"][-3:] == [first, second, third]
    # The next batch lists only what came after the last one.
    time.sleep(1)
    fourth = wc.commit_file("c.txt", "c\n")
    assert wc.push("main")[0] == 0
    nxt = wait_for_run(server, wc.repo, fourth, "ci", limit=120)
    assert nxt["commits"] == [fourth]

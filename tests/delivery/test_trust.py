"""Only CI runs of commits on the application's protected default branch produce deployable releases."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.core import Database, Settings
from conveyor.core.models import Event, EventDelivery
from conveyor.delivery.start import source_facts
from conveyor.delivery.trust import SourceFacts, judge_source
from tests.pipelines.helpers import repo_with_pipeline, wait_for_run
from tests.pipelines.test_tasks import APP, CHART
from tests.support.server import ServerHandle

MAIN = SourceFacts(default_branch="main", protected=True, on_default_branch=True)


def run(**over: Any) -> dict[str, Any]:
    return {"repo": "hello", "number": 4, "sha": "a" * 40, "ref": "refs/heads/main", "trigger": "push", **over}


@pytest.mark.parametrize(("payload", "facts", "rule"), [
    (run(), MAIN, None),
    (run(trigger="manual"), MAIN, None),  # a rebuild of reviewed code
    (run(trigger="retry"), MAIN, None),
    (run(trigger="manual", ref="refs/heads/feature"), MAIN, "cd.source-ref"),
    (run(ref="refs/heads/feature"), SourceFacts("main", True, False), "cd.source-ref"),
    (run(trigger="manual"), SourceFacts("main", True, False), "cd.source-commit"),
    (run(), SourceFacts("main", False, True), "cd.source-protected"),
    (run(ref="refs/heads/trunk"), SourceFacts("trunk", True, True), None),
    (run(ref=None, trigger=None), MAIN, "cd.source-ref"),
])
def test_judge_source(payload: dict[str, Any], facts: SourceFacts, rule: str | None) -> None:
    refusal = judge_source(payload, facts)
    assert (refusal.rule if refusal else None) == rule


def test_refusal_names_the_run_and_how_it_started() -> None:
    refusal = judge_source(run(trigger="manual", ref="refs/heads/wip"), MAIN)
    assert refusal is not None
    assert refusal.message == ("CI run #4 (started by hand, refs/heads/wip) is not deployable: only CI runs of "
                               "refs/heads/main are delivered")


def refusals(server: ServerHandle, repo: str) -> dict[int, dict[str, Any]]:
    entries = server.api().get("/api/v1/audit", params={"limit": 1000}).json()
    return {e["detail"]["number"]: e["detail"] for e in entries
            if e["action"] == "delivery.release_refused" and e["detail"]["repo"] == repo}


def wait_refusal(server: ServerHandle, repo: str, number: int, limit: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = refusals(server, repo).get(number)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"CI run #{number} of {repo} was not labelled not deployable")


def handled_by_delivery(db: Database, run_id: int, limit: float = 60) -> None:
    """Wait until delivery's consumer has handled the run's ``pipeline.ci.succeeded`` event."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with db.session() as s:
            events = [e.id for e in s.execute(select(Event).where(Event.topic == "pipeline.ci.succeeded")).scalars()
                      if e.payload.get("run_id") == run_id]
            done = s.execute(select(EventDelivery.done).where(EventDelivery.event_id.in_(events),
                                                              EventDelivery.consumer == "delivery.ci")).scalars()
            if events and all(done):
                return
        time.sleep(0.2)
    raise AssertionError(f"delivery never handled CI run {run_id}")


def test_hand_started_ci_runs_of_other_refs_never_deliver(server: ServerHandle, tmp_path: Path) -> None:
    wc, first = repo_with_pipeline(server, tmp_path, "ci:\n  - uses: publish-templates\n", CHART, app=APP)
    api = server.api()
    # main is not protected yet: nothing on it was necessarily reviewed.
    push_run = wait_for_run(server, wc.repo, first, "ci")
    assert push_run["state"] == "success"
    assert wait_refusal(server, wc.repo, push_run["number"])["rule"] == "cd.source-protected"

    assert api.put(f"/api/v1/repos/{wc.repo}/protection/main", json={"approvals": 1}).status_code == 200
    wc.git("checkout", "-q", "-b", "wip")
    unreviewed = wc.commit_file("chart/values.yaml", "replicas: 9\n", "unreviewed")
    assert wc.push("wip")[0] == 0

    by_ref = api.post(f"/api/v1/repos/{wc.repo}/runs", json={"pipeline": "ci", "ref": "wip"}).json()
    by_sha = api.post(f"/api/v1/repos/{wc.repo}/runs", json={"pipeline": "ci", "sha": unreviewed}).json()
    rebuild = api.post(f"/api/v1/repos/{wc.repo}/runs", json={"pipeline": "ci"}).json()
    for r in (by_ref, by_sha, rebuild):
        assert wait_for_run(server, wc.repo, r["sha"], "ci")["state"] == "success"
    refused = wait_refusal(server, wc.repo, by_ref["number"])
    assert refused["rule"] == "cd.source-ref" and refused["trigger"] == "manual" and not refused["deployable"]
    assert refused["message"].startswith(f"CI run #{by_ref['number']} (started by hand, refs/heads/wip)")
    refused = wait_refusal(server, wc.repo, by_sha["number"])
    assert refused["rule"] == "cd.source-commit" and refused["ref"] == "refs/heads/main"

    # What delivery is told about each commit, read through the forge as the consumer does.
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    db = Database(settings.db_url)
    try:
        with db.session() as s:
            assert source_facts(s, settings, wc.repo, first) == SourceFacts("main", True, True)
            assert source_facts(s, settings, wc.repo, unreviewed) == SourceFacts("main", True, False)
        handled_by_delivery(db, rebuild["id"])
    finally:
        db.dispose()
    assert rebuild["number"] not in refusals(server, wc.repo)  # a rebuild of main's commit is deployable

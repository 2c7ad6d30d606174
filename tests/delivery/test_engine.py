"""The promotion engine, transition by transition, against in-memory fakes of its interfaces.

No clusters, no git, no server: each test takes milliseconds. The fakes keep the forge's
transaction semantics (see ``fakes.py``), so the crash tests mean what they say.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conveyor.core import Conflict
from conveyor.delivery import ACTIVE_STATES, TERMINAL_STATES, TRANSITIONS, PromotionState, transitions_markdown
from conveyor.delivery.environments import Environment, Via
from conveyor.delivery.ports import Probe
from conveyor.delivery.steps import IllegalTransition, Step
from tests.delivery.fakes import VERIFY, Crash, World, standard_envs

S = PromotionState
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def to_verified_in_dev(world: World, version: str) -> int:
    pid = world.start(version)
    world.step(pid)  # pending -> pr_open
    world.step(pid)  # merge requested; merged after the step's commit
    world.step(pid)  # pr_open -> merged
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=True)
    world.step(pid)  # merged -> applied
    world.step(pid)  # applied -> verified
    assert world.get(pid).state == S.VERIFIED
    return pid


# --- the table -------------------------------------------------------------------------------------
def test_the_table_is_the_state_machine() -> None:
    assert set(TRANSITIONS) == set(S)
    assert {s for s, t in TRANSITIONS.items() if t.handler is not None} == ACTIVE_STATES
    assert all(not TRANSITIONS[s].next for s in TERMINAL_STATES)
    assert all(TRANSITIONS[s].next for s in ACTIVE_STATES)
    assert TRANSITIONS[S.PENDING].on_error == S.FAILED


def test_architecture_doc_shows_the_table() -> None:
    doc = (ROOT / "docs/architecture.md").read_text()
    assert transitions_markdown() in doc, "paste `transitions_markdown()` into the delivery section"


def test_a_move_outside_the_table_is_refused(world: World) -> None:
    pid = world.start("1.0.0-1")
    with world.db.session() as s:
        from conveyor.delivery import Promotion

        p = s.get(Promotion, pid)
        assert p is not None
        ctx = Step(s, p, standard_envs()["dev"], standard_envs(), world.ports, world.now, TRANSITIONS)
        with pytest.raises(IllegalTransition, match="pending -> verified"):
            ctx.move(S.VERIFIED, "verified")


# --- the happy path --------------------------------------------------------------------------------
def test_pending_opens_the_pr_as_the_author_with_the_live_diff(world: World) -> None:
    pid = world.start("1.0.0-1")
    assert world.step(pid)
    p = world.get(pid)
    assert p.state == S.PR_OPEN and p.pr_number == 1 and p.deploy_branch == "deploy/hello/1.0.0-1/dev"
    pr = world.forge.prs[(World.GITOPS, 1)]
    assert (pr.author, pr.source, pr.target) == ("dana", "deploy/hello/1.0.0-1/dev", "env/dev")
    assert "Deploy **hello 1.0.0-1** to **dev**" in pr.body and "dry run against `nonprod`" in pr.body
    head = world.forge.branches[(World.GITOPS, p.deploy_branch)]
    assert world.forge.contexts(head)["conveyor/diff"][0] == "success"
    assert world.forge.contexts(p.source_commit)["conveyor/cd/dev"] == ("pending", "PR #1 opened for dev")
    assert world.kinds(pid) == ["created", "pr_opened"]


def test_auto_merge_apply_verify_then_the_next_environment(world: World) -> None:
    pid = to_verified_in_dev(world, "1.0.0-1")
    assert world.forge.merges == [(World.GITOPS, 1)]
    assert world.kinds(pid) == ["created", "pr_opened", "merge_requested", "merged", "applied", "verified"]
    assert world.probe.calls[-1] == ("nonprod", "hello-dev", "/healthz")
    assert world.forge.contexts(world.get(pid).source_commit)["conveyor/cd/dev"][0] == "success"
    qa = world.promotions("qa")
    assert [(q.version, q.state, q.promoted_from) for q in qa] == [("1.0.0-1", S.PENDING, pid)]


def test_approvals_environment_merges_only_when_approved(world: World) -> None:
    to_verified_in_dev(world, "1.0.0-1")
    qa = world.promotions("qa")[0].id
    world.step(qa)
    number = world.get(qa).pr_number
    assert number is not None
    assert not world.step(qa) and world.forge.merges == [(World.GITOPS, 1)]  # waits for a reviewer
    world.forge.approve(World.GITOPS, number, "theo")
    world.step(qa)
    world.step(qa)
    assert world.get(qa).state == S.MERGED
    assert world.get(qa).events[-1].detail == {"approvers": ["theo"]}


def test_without_auto_merge_or_approvals_a_person_merges(tmp_path: Path) -> None:
    world = World(tmp_path, {"dev": Environment(name="dev", cluster="c", branch="env/dev")})
    pid = world.start("1.0.0-1")
    world.step(pid)
    for _ in range(3):
        assert not world.step(pid)
    assert world.forge.merges == []
    world.forge.merge(World.GITOPS, 1)  # by hand
    world.step(pid)
    assert world.get(pid).state == S.MERGED


def test_unchanged_when_the_environment_already_runs_it(world: World) -> None:
    first = to_verified_in_dev(world, "1.0.0-1")
    again = world.start("1.0.0-1")  # the same rendered files: nothing to merge
    world.step(again)
    p = world.get(again)
    assert p.state == S.MERGED and p.pr_number is None and p.events[-1].kind == "unchanged"
    assert p.merge_commit == world.forge.branches[(World.GITOPS, "env/dev")]
    world.step(again)  # the agent's verdict on the tip counts
    world.step(again)
    assert world.get(again).state == S.VERIFIED and world.get(first).state == S.VERIFIED


# --- failures ---------------------------------------------------------------------------------------
def test_apply_failure_rolls_back_with_a_revert_pr(world: World) -> None:
    good = to_verified_in_dev(world, "1.0.0-1")
    pid = world.start("1.1.0-2")
    for _ in range(3):
        world.step(pid)
    assert world.get(pid).state == S.MERGED
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False, description="CrashLoopBackOff")
    world.step(pid)
    p = world.get(pid)
    assert p.state == S.ROLLING_BACK and p.failure_reason == "apply failed on nonprod: CrashLoopBackOff"
    assert p.failed_at == world.now and p.rollback_pr_number is not None
    assert world.forge.contexts(p.source_commit)["conveyor/cd/dev"][0] == "failure"
    world.step(pid)  # CD merges the revert under dev's rules (auto_merge)
    world.step(pid)  # merged: waits for the agent on the revert
    assert world.get(pid).state == S.ROLLING_BACK
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=True)
    world.step(pid)
    p = world.get(pid)
    assert p.state == S.ROLLED_BACK and "1.0.0-1 restored and verified" in (p.events[-1].message or "")
    assert world.kinds(pid)[-4:] == ["failed", "rollback_opened", "merge_requested", "rolled_back"]
    assert world.get(good).state == S.VERIFIED
    assert world.forge.commits[world.forge.branches[(World.GITOPS, "env/dev")]].tree == \
        world.forge.commits[world.forge.prs[(World.GITOPS, 1)].merge_commit or ""].tree


def test_rollback_of_the_first_version_removes_it(world: World) -> None:
    pid = world.start("1.0.0-1")
    for _ in range(3):
        world.step(pid)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False)
    world.step(pid)
    world.step(pid)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=True)
    world.step(pid)
    assert world.get(pid).state == S.ROLLED_BACK
    assert world.get(pid).events[-1].message == "removed from dev: no earlier version ran there"


def test_verification_failure_waits_for_its_timeout_then_rolls_back(world: World) -> None:
    pid = world.start("1.0.0-1")
    for _ in range(3):
        world.step(pid)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=True)
    world.step(pid)
    assert world.get(pid).state == S.APPLIED
    world.probe.answer = Probe(True, 503, "starting")
    world.advance(seconds=VERIFY.timeout - 1)
    assert not world.step(pid)  # not yet: the app may still be starting
    world.advance(seconds=2)
    world.step(pid)
    p = world.get(pid)
    assert p.state == S.ROLLING_BACK
    assert p.failure_reason == "verification failed: GET /healthz answered 503, expected 200: starting"


def test_a_dependency_that_did_not_answer_fails_verification_with_its_reason(tmp_path: Path) -> None:
    envs = standard_envs()
    envs["dev"] = replace(envs["dev"], verify=replace(VERIFY, path="/", dependency="counter", via=Via.NODEPORT))
    world = World(tmp_path, envs)
    pid = world.start("1.0.0-1")
    for _ in range(3):
        world.step(pid)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=True)
    world.probe.answer = Probe(True, 200, '{"version": "1.0.0-1", "counter": {"ok": false, "error": "timed out"}}')
    world.step(pid)
    assert world.get(pid).state == S.APPLIED
    assert not world.step(pid)  # the app answers, its dependency does not: wait for the verify timeout
    assert world.probe.vias[-1] is Via.NODEPORT  # the environment's way in reaches the probe
    world.advance(seconds=VERIFY.timeout + 1)
    world.step(pid)
    p = world.get(pid)
    assert p.state == S.ROLLING_BACK
    assert p.failure_reason == "verification failed: GET / answered 200, but its dependency 'counter' did not " \
                               "answer: timed out"


def test_agent_silence_past_the_deadline_fails_the_promotion(world: World) -> None:
    pid = world.start("1.0.0-1")
    for _ in range(3):
        world.step(pid)
    world.advance(minutes=9)
    assert not world.step(pid)
    world.advance(minutes=2)
    world.step(pid)
    assert world.get(pid).state == S.ROLLING_BACK
    assert world.get(pid).failure_reason == "the agent of 'nonprod' did not report within 600s"


def test_failure_on_the_unchanged_path_has_nothing_to_revert(world: World) -> None:
    to_verified_in_dev(world, "1.0.0-1")
    again = world.start("1.0.0-1")
    world.step(again)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False, description="node lost")
    world.step(again)
    assert world.get(again).state == S.FAILED and world.get(again).rollback_pr_number is None


def test_rollback_failed_when_its_pr_is_closed_or_its_apply_fails(world: World) -> None:
    closed, failing = world.start("1.0.0-1"), None
    for _ in range(3):
        world.step(closed)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False)
    world.step(closed)
    world.forge.close_by_hand(World.GITOPS, world.get(closed).rollback_pr_number or 0)
    world.step(closed)
    assert world.get(closed).state == S.ROLLBACK_FAILED and world.kinds(closed)[-1] == "rollback_abandoned"

    failing = world.start("1.1.0-2", app="web")  # hello is held in dev now
    for _ in range(3):
        world.step(failing)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False)
    world.step(failing)
    world.step(failing)  # revert merged
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False, description="still failing")
    world.step(failing)
    assert world.get(failing).state == S.ROLLBACK_FAILED
    assert world.get(failing).events[-1].message == "rollback apply failed: still failing"


def test_rollback_failed_when_the_restored_version_never_verifies(world: World) -> None:
    to_verified_in_dev(world, "1.0.0-1")
    pid = world.start("1.1.0-2")
    for _ in range(3):
        world.step(pid)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False)
    world.step(pid)
    world.step(pid)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=True)
    world.probe.answer = Probe(False, None, "", "ConnectError: refused")
    assert not world.step(pid)
    world.advance(minutes=11)
    world.step(pid)
    assert world.get(pid).state == S.ROLLBACK_FAILED
    assert "1.0.0-1 restored but verification fails: ConnectError" in world.get(pid).events[-1].message


def test_invalid_templates_fail_before_anything_is_merged(world: World) -> None:
    world.renderer.refuse = "Deployment/hello: invalid at spec.replicas"
    pid = world.start("1.0.0-1")
    assert world.step(pid)
    p = world.get(pid)
    assert p.state == S.FAILED and p.failure_reason == "Deployment/hello: invalid at spec.replicas"
    assert p.events[-1].detail == {"rule": "render.validate"}
    assert world.forge.prs == {}
    assert world.forge.contexts(p.source_commit)["conveyor/cd/dev"][0] == "failure"


def test_closed_pr_abandons(world: World) -> None:
    world.forge.required[(World.GITOPS, "env/dev")] = 5  # CD will not merge it
    pid = world.start("1.0.0-1")
    world.step(pid)
    world.forge.close_by_hand(World.GITOPS, 1)
    world.step(pid)
    assert world.get(pid).state == S.ABANDONED and world.get(pid).finished_at == world.now


def test_a_newer_version_supersedes_an_older_waiting_one(world: World) -> None:
    world.forge.required[(World.GITOPS, "env/dev")] = 5
    old = world.start("1.0.0-1")
    world.step(old)
    new = world.start("1.1.0-2")
    world.step(new)
    assert world.get(old).state == S.SUPERSEDED
    assert world.get(old).events[-1].message == f"superseded by 1.1.0-2 (promotion {new})"
    assert world.forge.prs[(World.GITOPS, 1)].state == "closed"
    assert world.get(new).state == S.PR_OPEN


def test_an_environment_removed_from_main_ends_its_promotions(world: World) -> None:
    pid = world.start("1.0.0-1")
    del world.envs.envs["dev"]
    world.step(pid)
    assert world.get(pid).state == S.FAILED and world.get(pid).failure_reason == "environment 'dev' no longer exists"


# --- crashes: a step is redone idempotently --------------------------------------------------------
def test_crash_inside_a_step_leaves_it_to_be_redone_once(world: World) -> None:
    pid = world.start("1.0.0-1")
    world.forge.crash_after = "open_pr"  # the branch is written, the PR row is in the lost transaction
    with pytest.raises(Crash):
        world.step(pid)
    assert world.get(pid).state == S.PENDING and world.forge.prs == {} and world.forge.posted == []
    engine = world.new_engine()  # restarted
    assert engine.step(pid)
    p = world.get(pid)
    assert p.state == S.PR_OPEN and list(world.forge.prs) == [(World.GITOPS, 1)]
    assert world.kinds(pid) == ["created", "pr_opened"]
    assert [c for *_, c, _ in world.forge.posted].count("conveyor/diff") == 1


def test_crash_between_the_merge_intent_and_the_merge(world: World) -> None:
    pid = world.start("1.0.0-1")
    world.step(pid)
    world.forge.crash_after = "merge"
    with pytest.raises(Crash):
        world.step(pid)  # the intent committed, the merge never ran
    assert world.get(pid).state == S.PR_OPEN and world.kinds(pid)[-1] == "merge_requested"
    engine = world.new_engine()
    engine.step(pid)  # merges now
    engine.step(pid)
    assert world.get(pid).state == S.MERGED and world.forge.merges == [(World.GITOPS, 1)]


def test_crash_after_the_merge_before_the_next_step(world: World) -> None:
    pid = world.start("1.0.0-1")
    world.step(pid)
    world.step(pid)  # intent + merge; the process dies before another step
    engine = world.new_engine()
    engine.step(pid)
    assert world.get(pid).state == S.MERGED and world.forge.merges == [(World.GITOPS, 1)]
    assert world.kinds(pid).count("merge_requested") == 1


def test_a_refused_merge_is_decided_again_next_step(world: World) -> None:
    pid = world.start("1.0.0-1")
    world.step(pid)
    world.forge.merge_error = Conflict("'gitops' kept moving while merging #1; try again", rule="merge.contended")
    assert not world.step(pid)
    assert world.get(pid).state == S.PR_OPEN
    world.forge.merge_error = None
    world.step(pid)
    world.step(pid)
    assert world.get(pid).state == S.MERGED

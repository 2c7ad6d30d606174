"""Governance rules (issue 17) against the promotion engine and its fakes: freeze windows and the stop
switch, soak time, holds and bad versions after a rollback, expiring approvals, risky changes,
one deployment per environment branch at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from conveyor.core import Conflict, Forbidden, NotFound, Principal, Role, Settings
from conveyor.delivery import PromotionState, controls, governance, start
from conveyor.delivery.environments import Approvals, Freeze, FreezeWindow, Risk, Soak
from conveyor.delivery.models import App
from conveyor.delivery.ports import Probe
from tests.delivery.fakes import T0, World, standard_envs

S = PromotionState
GATE = "conveyor/cd/gate"
OPS = Principal(name="olga", role=Role.CLUSTER_ADMIN, user_id=3)
DEV = Principal(name="dana", role=Role.DEVELOPER, user_id=2)
ADMIN = Principal(name="admin", role=Role.ADMIN, user_id=1)


def world_with(tmp_path: Path, **dev: object) -> World:
    envs = standard_envs()
    envs["dev"] = replace(envs["dev"], **dev)  # type: ignore[arg-type]
    return World(tmp_path, envs)


def gate(world: World, pid: int) -> tuple[str, str]:
    p = world.get(pid)
    head = world.forge.branches[(World.GITOPS, p.deploy_branch or "")]
    return world.forge.contexts(head)[GATE]


def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def deploy(world: World, pid: int, steps: int = 3) -> None:
    for _ in range(steps):
        world.step(pid)


# --- freeze windows --------------------------------------------------------------------------------
def test_a_one_off_freeze_window_holds_the_merge_with_its_reason(tmp_path: Path) -> None:
    window = FreezeWindow(reason="year-end change freeze", start=T0 - timedelta(hours=1), end=T0 + timedelta(hours=2))
    world = world_with(tmp_path, freeze=Freeze((window,)))
    pid = world.start("1.0.0-1")
    deploy(world, pid)
    assert world.get(pid).state == S.PR_OPEN and world.forge.merges == []
    state, why = gate(world, pid)
    assert state == "pending" and "frozen until 2026-11-02 11:00 UTC: year-end change freeze [freeze.window]" in why
    world.advance(hours=2)
    deploy(world, pid)
    assert world.get(pid).state == S.MERGED and gate(world, pid)[0] == "success"


def test_a_recurring_window_in_its_time_zone(tmp_path: Path) -> None:
    # Every Monday from 10:00 Berlin time (09:00 UTC in November) for an hour: T0 is Monday 09:00 UTC.
    window = FreezeWindow(reason="weekly platform maintenance", cron="0 10 * * MON", duration=3600,
                          timezone="Europe/Berlin")
    env = replace(standard_envs()["dev"], freeze=Freeze((window,)))
    assert governance.active_window(env, T0 + timedelta(minutes=5)) is not None
    assert governance.active_window(env, T0 - timedelta(minutes=5)) is None
    assert governance.active_window(env, T0 + timedelta(minutes=61)) is None
    upcoming = governance.upcoming_window(env, T0 - timedelta(hours=3))
    assert upcoming is not None and upcoming[1].astimezone(T0.tzinfo) == T0
    assert governance.upcoming_window(env, T0 + timedelta(hours=2)) is None  # a week away


def test_an_override_lets_one_promotion_through_a_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    window = FreezeWindow(reason="release week", start=T0 - timedelta(days=1), end=T0 + timedelta(days=3))
    world = world_with(tmp_path, freeze=Freeze((window,), override_roles=("cluster-admin",)))
    monkeypatch.setattr(controls, "app_environment", lambda s, st, app, env: (None, world.envs.envs[env]))
    hotfix, other = world.start("1.0.1-3"), world.start("1.0.2-4", app="web")
    world.step(hotfix)
    world.step(other)
    with world.db.session() as s, pytest.raises(Forbidden) as exc:
        controls.override_freeze(s, settings(tmp_path), DEV, hotfix, "customer outage")
    assert exc.value.rule == "freeze.override-role"
    with world.db.session() as s:
        controls.override_freeze(s, settings(tmp_path), OPS, hotfix, "fixes the checkout outage (INC-7)")
    deploy(world, hotfix)
    deploy(world, other)
    assert world.get(hotfix).state == S.MERGED and world.get(other).state == S.PR_OPEN
    assert "release week [freeze.window]" in gate(world, other)[1]
    assert world.get(hotfix).events[-3].kind == "freeze_override"


# --- the stop switch -------------------------------------------------------------------------------
def test_the_stop_switch_halts_every_merge_until_ended(tmp_path: Path) -> None:
    world = World(tmp_path)
    pid = world.start("1.0.0-1")
    with world.db.session() as s:
        f = controls.start_freeze(s, settings(tmp_path), OPS, None, "incident INC-42: database failover")
    with world.db.session() as s, pytest.raises(Conflict):
        controls.start_freeze(s, settings(tmp_path), OPS, None, "again")
    deploy(world, pid)
    assert world.get(pid).state == S.PR_OPEN and world.forge.merges == []
    state, why = gate(world, pid)
    assert state == "pending" and "deployments halted by olga" in why and "INC-42" in why
    with world.db.session() as s:
        ended = controls.end_freeze(s, settings(tmp_path), ADMIN, None, "failover done")
    assert ended.id == f.id and ended.ended_by == "admin"
    deploy(world, pid)
    assert world.get(pid).state == S.MERGED


def test_a_stop_switch_for_one_environment_leaves_the_others(tmp_path: Path) -> None:
    world = World(tmp_path)
    with world.db.session() as s:
        controls.start_freeze(s, settings(tmp_path), OPS, "qa", "qa data refresh")
    dev = world.start("1.0.0-1")
    deploy(world, dev)
    assert world.get(dev).state == S.MERGED
    with world.db.session() as s:
        assert [b.rule for b in governance.freeze_blocks(s, standard_envs()["qa"], T0)] == ["freeze.stop-switch"]
        assert governance.freeze_blocks(s, standard_envs()["prod"], T0) == []
    with world.db.session() as s, pytest.raises(NotFound):
        controls.end_freeze(s, settings(tmp_path), OPS, None)


# --- soak time -------------------------------------------------------------------------------------
def soaking(world: World) -> int:
    pid = world.start("1.0.0-1")
    deploy(world, pid)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=True)
    world.step(pid)  # applied
    world.step(pid)  # verified once: soaking
    assert world.get(pid).state == S.SOAKING
    return pid


def test_soak_time_before_the_next_environment(tmp_path: Path) -> None:
    world = world_with(tmp_path, soak=Soak(duration=1800, max_restarts=1))
    pid = soaking(world)
    world.probe.restart_count = 1  # within the threshold
    world.advance(minutes=29)
    assert not world.step(pid) and world.promotions("qa") == []
    world.advance(minutes=2)
    calls = len(world.probe.calls)
    world.step(pid)
    assert world.get(pid).state == S.VERIFIED and len(world.probe.calls) == calls + 1  # verified again at the end
    assert world.get(pid).events[-1].message.startswith("healthy through the soak")
    assert [q.state for q in world.promotions("qa")] == [S.PENDING]


def test_restarts_during_the_soak_fail_and_roll_back(tmp_path: Path) -> None:
    world = world_with(tmp_path, soak=Soak(duration=1800, max_restarts=1))
    pid = soaking(world)
    world.probe.restart_count = 2
    world.advance(minutes=5)
    world.step(pid)
    p = world.get(pid)
    assert p.state == S.ROLLING_BACK and p.failure_reason == "2 container restart(s) during the soak (at most 1)"
    assert world.promotions("qa") == []


def test_unhealthy_or_failing_verification_during_the_soak_rolls_back(tmp_path: Path) -> None:
    world = world_with(tmp_path, soak=Soak(duration=600))
    pid = soaking(world)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False, description="Deployment/hello: Failed")
    world.step(pid)
    assert world.get(pid).failure_reason == "unhealthy during the soak on nonprod: Deployment/hello: Failed"

    other = world_with(tmp_path / "b", soak=Soak(duration=600))
    pid = soaking(other)
    other.advance(minutes=11)
    other.probe.answer = Probe(True, 500, "boom")
    other.step(pid)
    assert other.get(pid).state == S.ROLLING_BACK
    assert other.get(pid).failure_reason.startswith("verification at the end of the soak failed")


# --- holds and bad versions after a rollback -------------------------------------------------------
def rolled_back(world: World, version: str) -> int:
    pid = world.start(version)
    deploy(world, pid)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False, description="CrashLoopBackOff")
    world.step(pid)
    world.step(pid)
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=True)
    world.step(pid)
    assert world.get(pid).state == S.ROLLED_BACK
    return pid


def test_after_a_rollback_the_version_is_bad_and_the_environment_held(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    rolled_back(world, "1.2.0-5")
    with world.db.session() as s:
        assert governance.bad_version(s, "hello", "1.2.0-5") is not None
        hold = governance.active_hold(s, "hello", "dev")
        assert hold is not None and "1.2.0-5 failed and was rolled back" in hold.reason
    again = world.start("1.2.0-5")  # the same build, automatically (say, promoted from elsewhere)
    world.step(again)
    assert world.get(again).state == S.REFUSED and world.get(again).events[-1].detail == {"rule": "hold.bad-version"}
    fixed = world.start("1.2.1-6")
    deploy(world, fixed)
    assert world.get(fixed).state == S.PR_OPEN and "hold.after-rollback" in gate(world, fixed)[1]
    other_app = world.start("3.0.0-1", app="web")
    monkeypatch.setattr(controls, "app_environment", lambda s, st, app, env: (None, world.envs.envs[env]))
    with world.db.session() as s, pytest.raises(Forbidden) as exc:
        controls.release_hold(s, settings(tmp_path), DEV, "hello", "dev", "fixed in 1.2.1")
    assert exc.value.rule == "hold.release-role"
    with world.db.session() as s:
        controls.release_hold(s, settings(tmp_path), OPS, "hello", "dev", "1.2.1 fixes the config file")
    deploy(world, fixed)
    assert world.get(fixed).state == S.MERGED
    world.step(other_app)
    assert "deploy.one-at-a-time" in gate(world, other_app)[1]  # web waits for hello's deployment


def test_a_manual_rollback_holds_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    for version in ("1.0.0-1", "1.1.0-2"):
        pid = world.start(version)
        deploy(world, pid)
        world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=True)
        deploy(world, pid, 2)
        assert world.get(pid).state == S.VERIFIED
    monkeypatch.setattr(start, "current_environments", lambda s, st, repo: world.envs.envs)
    with world.db.session() as s:
        s.add(App(name="hello", source_repo=World.SOURCE, gitops_repo=World.GITOPS))
    with world.db.session() as s:
        back = start.rollback(s, settings(tmp_path), "hello", "dev", None, by="omar").id
    next_build = world.start("1.3.0-7")
    deploy(world, back)
    deploy(world, next_build)
    assert world.get(back).state == S.MERGED and world.get(back).started_by == "omar"
    assert world.get(next_build).state == S.PR_OPEN
    assert "rolled back to 1.0.0-1 by omar" in gate(world, next_build)[1]


def test_a_rollback_pr_is_never_held_back(tmp_path: Path) -> None:
    world = World(tmp_path)
    pid = world.start("1.0.0-1")
    deploy(world, pid)
    with world.db.session() as s:
        controls.start_freeze(s, settings(tmp_path), OPS, None, "incident")
    world.agents.report_tip(World.GITOPS, "env/dev", "nonprod", ok=False)
    world.step(pid)
    world.step(pid)  # the revert merges during the freeze
    assert world.forge.merges[-1] == (World.GITOPS, world.get(pid).rollback_pr_number)


# --- approvals that expire -------------------------------------------------------------------------
def test_a_promotion_waiting_for_approvals_expires(tmp_path: Path) -> None:
    envs = standard_envs()
    envs["qa"] = replace(envs["qa"], approvals=Approvals(required=1, approver_roles=("reviewer",),
                                                         expire_after=3 * 86400))
    world = World(tmp_path, envs)
    pid = world.start("1.0.0-1", env="qa")
    world.step(pid)
    world.advance(days=2)
    assert not world.step(pid)
    world.advance(days=1, seconds=1)
    world.step(pid)
    p = world.get(pid)
    assert p.state == S.EXPIRED and p.finished_at == world.now and p.events[-1].detail == {"rule": "approvals.expired"}
    assert world.forge.prs[(World.GITOPS, p.pr_number or 0)].state == "closed"


# --- risky changes ---------------------------------------------------------------------------------
def test_sensitive_kinds_in_the_rendered_diff_need_extra_approvals(tmp_path: Path) -> None:
    envs = standard_envs()
    envs["qa"] = replace(envs["qa"], risk=Risk(extra_approvals=1))
    world = World(tmp_path, envs)
    world.renderer.extra = "---\nkind: ClusterRole\nmetadata: {name: hello-reader}\nrules: []\n"
    pid = world.start("1.0.0-1", env="qa")
    world.step(pid)
    p = world.get(pid)
    assert p.extra_approvals == 1
    assert p.risk == [{"rule": "risk.sensitive-kinds", "reason": "changes ClusterRole/hello-reader"}]
    body = world.forge.prs[(World.GITOPS, p.pr_number or 0)].body
    assert "Risky change: 2 approval(s) required" in body and "`risk.sensitive-kinds`: changes ClusterRole" in body
    world.forge.approve(World.GITOPS, p.pr_number or 0, "theo")
    deploy(world, pid, 2)
    assert world.get(pid).state == S.PR_OPEN
    state, why = gate(world, pid)
    assert state == "pending" and "needs 2 approval(s), has 1" in why and "[risk.sensitive-kinds]" in why
    world.forge.approve(World.GITOPS, p.pr_number or 0, "rita")
    deploy(world, pid, 3)
    assert world.get(pid).state == S.MERGED


def test_a_security_trailer_marks_a_change_risky(tmp_path: Path) -> None:
    envs = standard_envs()
    envs["dev"] = replace(envs["dev"], risk=Risk(extra_approvals=1, sensitive_kinds=()))
    world = World(tmp_path, envs)
    world.forge.trailer_of["1.0.1-2".ljust(40, "0")] = {"Security": "CVE-2026-1234"}
    risky, plain = world.start("1.0.1-2"), world.start("1.0.2-3", app="web")
    world.step(risky)
    assert world.get(risky).risk == [{"rule": "risk.security-change",
                                      "reason": "the commit is marked security-related (Security: CVE-2026-1234)"}]
    deploy(world, risky)
    assert world.get(risky).state == S.PR_OPEN  # dev auto-merges, but not a security change without approval
    world.step(plain)
    assert world.get(plain).risk == [] and world.get(plain).extra_approvals == 0


def test_a_security_update_rebuild_is_a_risky_change_in_every_environment(tmp_path: Path) -> None:
    """A release CI rebuilt because its base image moved carries the label from the CI event into every
    environment it is promoted to; where `risk` is configured it needs the extra approval."""
    envs = standard_envs()
    envs["dev"] = replace(envs["dev"], risk=Risk(extra_approvals=1, sensitive_kinds=()))
    world = World(tmp_path, envs)
    why = "base image cache/debian-python:12 changed to sha256:0123456789ab"
    pid = world.start("1.0.3-4", security_update=why)
    world.step(pid)
    p = world.get(pid)
    assert p.risk == [{"rule": "risk.security-change", "reason": f"the release is a security update ({why})"}]
    assert p.extra_approvals == 1 and p.security_update == why
    deploy(world, pid)
    assert world.get(pid).state == S.PR_OPEN  # dev auto-merges, but not a security update without approval
    with world.db.session() as s:
        qa = start.create_promotion(s, start.release_of(world.get(pid)), envs["qa"], World.GITOPS)
        assert qa.security_update == why  # carried to the next environment


def test_risk_rules_only_where_configured() -> None:
    env = standard_envs()["prod"]
    assert governance.assess_risk(env, "kind: Secret\nmetadata: {name: s}\n", None, {"Security": "yes"}) == []
    risky = replace(env, risk=Risk())
    assert [r["rule"] for r in governance.assess_risk(risky, "kind: Secret\nmetadata: {name: s}\n", None, {})] == [
        "risk.sensitive-kinds"]
    same = "kind: Secret\nmetadata: {name: s}\ndata: {a: b}\n"
    assert governance.assess_risk(risky, same, same, {"security": "no"}) == []

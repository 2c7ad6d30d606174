"""The order steps run in (sequential, or a `needs:` DAG) and what a failure skips: pure logic, no runner."""

from __future__ import annotations

from conveyor.pipelines.runner.plan import Plan, StepState
from conveyor.pipelines.spec import StepSpec


def steps(**needs: tuple[str, ...]) -> list[StepSpec]:
    return [StepSpec(name=n, kind="run", script="true", needs=d) for n, d in needs.items()]


def test_without_needs_steps_run_one_after_another_and_a_failure_skips_the_rest() -> None:
    plan = Plan(steps(a=(), b=(), c=()), parallel=False)
    assert plan.ready(limit=4) == [0]
    plan.start(0)
    assert plan.ready(limit=4) == []
    assert plan.finish(0, StepState.SUCCESS) == []
    assert plan.ready(limit=4) == [1]
    plan.start(1)
    assert plan.finish(1, StepState.FAILURE) == [2]
    assert plan.why_skipped[2] == "not run: 'b' failure" and plan.finished


def test_independent_steps_start_together_within_the_limit() -> None:
    plan = Plan(steps(lint=(), unit=(), docs=(), build=("lint",), test=("build", "unit")), parallel=True)
    assert plan.ready(limit=2) == [0, 1]
    plan.start(0)
    plan.start(1)
    assert plan.ready(limit=2) == []  # the limit is reached
    assert plan.ready(limit=3) == [2]
    plan.finish(0, StepState.SUCCESS)
    assert plan.ready(limit=4) == [2, 3]  # build waited only for lint


def test_a_failure_skips_exactly_its_dependents_transitively() -> None:
    plan = Plan(steps(lint=(), unit=(), build=("lint",), test=("build",), docs=()), parallel=True)
    for i in (0, 1, 4):
        plan.start(i)
    skipped = plan.finish(0, StepState.FAILURE)
    assert [plan.steps[i].name for i in skipped] == ["build", "test"]
    assert plan.why_skipped[2] == "not run: needs 'lint', which failure"
    assert plan.why_skipped[3] == "not run: needs 'build', which skipped"
    assert not plan.finished  # unit and docs still run: one pass reports every independent problem
    plan.finish(1, StepState.SUCCESS)
    plan.finish(4, StepState.SUCCESS)
    assert plan.finished and plan.first_failure() == 0


def test_stopping_skips_what_has_not_started() -> None:
    plan = Plan(steps(a=(), b=(), c=("a",)), parallel=True)
    plan.start(0)
    assert plan.stop("not run: cancelled") == [1, 2]
    assert plan.ready(limit=4) == []

"""The order a run's steps go in: one after another, or as a ``needs:`` DAG.

A pipeline whose steps never say ``needs`` keeps the old meaning: steps run in file order and the
first failure ends the run (the rest are *skipped*). Once any step says ``needs``, a step waits only
for the steps it names, independent steps run at once (within the runner's limit), and a failure
skips exactly the steps that depend on it, directly or not, each saying which need failed; the
others still run, so one pass reports every independent problem. Pure logic, tested without a runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from conveyor.pipelines.spec import StepSpec


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


DONE = (StepState.SUCCESS, StepState.FAILURE, StepState.CANCELLED, StepState.SKIPPED)


@dataclass
class Plan:
    steps: list[StepSpec]
    parallel: bool
    states: list[StepState] = field(init=False)
    why_skipped: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.states = [StepState.PENDING] * len(self.steps)
        self._index = {s.name: i for i, s in enumerate(self.steps)}

    def ready(self, limit: int) -> list[int]:
        """Steps that may start now, at most ``limit`` more than are already running."""
        running = self.states.count(StepState.RUNNING)
        free = max(0, limit - running)
        if not self.parallel:
            if running or StepState.FAILURE in self.states or StepState.CANCELLED in self.states:
                return []
            nxt = next((i for i, st in enumerate(self.states) if st == StepState.PENDING), None)
            return [nxt] if nxt is not None and free else []
        out: list[int] = []
        for i, st in enumerate(self.states):
            if len(out) >= free:
                break
            if st == StepState.PENDING and all(self.states[self._index[n]] == StepState.SUCCESS
                                               for n in self.steps[i].needs):
                out.append(i)
        return out

    def start(self, i: int) -> None:
        self.states[i] = StepState.RUNNING

    def finish(self, i: int, state: StepState) -> list[int]:
        """Record a step's end; returns the steps that will now never run (now skipped)."""
        self.states[i] = state
        if state == StepState.SUCCESS:
            return []
        if not self.parallel:
            return self._skip_all(f"not run: '{self.steps[i].name}' {state.value}")
        skipped = []
        changed = True
        while changed:
            changed = False
            for j, st in enumerate(self.states):
                if st != StepState.PENDING:
                    continue
                bad = [n for n in self.steps[j].needs if self.states[self._index[n]] in
                       (StepState.FAILURE, StepState.CANCELLED, StepState.SKIPPED)]
                if bad:
                    self.states[j] = StepState.SKIPPED
                    self.why_skipped[j] = f"not run: needs '{bad[0]}', which {self.states[self._index[bad[0]]].value}"
                    skipped.append(j)
                    changed = True
        return skipped

    def stop(self, why: str) -> list[int]:
        """Cancellation or shutdown: nothing more starts."""
        return self._skip_all(why)

    def _skip_all(self, why: str) -> list[int]:
        out = []
        for j, st in enumerate(self.states):
            if st == StepState.PENDING:
                self.states[j] = StepState.SKIPPED
                self.why_skipped[j] = why
                out.append(j)
        return out

    @property
    def finished(self) -> bool:
        return all(st in DONE for st in self.states)

    @property
    def running(self) -> int:
        return self.states.count(StepState.RUNNING)

    def first_failure(self) -> int | None:
        return next((i for i, st in enumerate(self.states) if st in (StepState.FAILURE, StepState.CANCELLED)), None)

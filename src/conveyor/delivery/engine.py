"""The promotion engine: moves each active promotion at most one state per step, one transaction per
step, dispatching through ``transitions.TRANSITIONS`` (the state diagram is that table; see
docs/architecture.md for it rendered).

Everything outside delivery's own tables comes through ``Ports`` (``ports.py``), so the same engine
runs against the real forge and clusters (``adapters.real_ports``) and against in-memory fakes in the
unit tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select

from conveyor.core import ConveyorError, Database, utcnow
from conveyor.core.background import BackgroundLoop
from conveyor.delivery.models import Promotion
from conveyor.delivery.ports import Ports
from conveyor.delivery.records import move
from conveyor.delivery.states import ACTIVE_STATES, PromotionState
from conveyor.delivery.steps import Step, report_source
from conveyor.delivery.transitions import TRANSITIONS, ends_when_environment_gone

log = logging.getLogger(__name__)

GATE_REFRESH = timedelta(seconds=30)  # freeze windows open and close by the clock, not by an event


class PromotionEngine(BackgroundLoop):
    name = "delivery"

    def __init__(self, db: Database, ports: Ports, poll_interval: float = 1.0,
                 clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(poll_interval)
        self.db = db
        self.ports = ports
        self.clock = clock
        self._gates_at: datetime | None = None

    def run_once(self) -> bool:
        self._refresh_gates()
        with self.db.session() as s:
            ids = list(s.execute(select(Promotion.id).where(Promotion.state.in_(ACTIVE_STATES))
                                 .order_by(Promotion.id)).scalars())
        moved = False
        for pid in ids:
            if self.stopping:
                break
            try:
                moved |= self.step(pid)
            except Exception:
                log.exception("promotion %s: step failed", pid)
        return moved

    def step(self, pid: int) -> bool:
        """Advance one promotion by at most one state; True when it moved."""
        effects: list[Callable[[], None]] = []
        state: PromotionState | None = None
        try:
            with self.db.session() as s:
                p = s.get(Promotion, pid)
                if p is None or p.state not in ACTIVE_STATES:
                    return False
                state = p.state
                envs = self.ports.environments.environments(s, p.gitops_repo)
                env = envs.get(p.env)
                if env is None:
                    move(s, p, ends_when_environment_gone(state), "failed",
                         f"environment '{p.env}' no longer exists", at=self.clock())
                    return True
                handler = TRANSITIONS[state].handler
                assert handler is not None
                ctx = Step(s, p, env, envs, self.ports, self.clock(), TRANSITIONS, effects)
                handler(ctx)
                moved = p.state != state
        except ConveyorError as exc:
            if state is None or TRANSITIONS[state].on_error is None:
                raise
            return self._refused(pid, state, exc)
        for effect in effects:
            self._run_effect(pid, effect)
        return moved

    def _refused(self, pid: int, state: PromotionState, exc: ConveyorError) -> bool:
        """Rendering, validation or a refused PR: the step's transaction was rolled back, and nothing
        of this promotion was merged, so it ends as the table says, with the refusing rule."""
        with self.db.session() as s:
            p = s.get(Promotion, pid)
            if p is None or p.state != state:
                return False
            ends = TRANSITIONS[state].on_error
            assert ends is not None
            move(s, p, ends, "failed", exc.detail, at=self.clock(), rule=exc.rule)
            envs = self.ports.environments.environments(s, p.gitops_repo)
            env = envs.get(p.env)
            if env is not None:
                report_source(Step(s, p, env, envs, self.ports, self.clock(), TRANSITIONS), "failure",
                              f"{p.env}: {exc.detail}")
        return True

    def _refresh_gates(self) -> None:
        now = self.clock()
        if self.ports.gates is None or (self._gates_at is not None and now - self._gates_at < GATE_REFRESH):
            return
        self._gates_at = now
        try:
            with self.db.session() as s:
                self.ports.gates.refresh(s)
        except Exception:
            log.exception("refreshing the gate checks failed")

    @staticmethod
    def _run_effect(pid: int, effect: Callable[[], None]) -> None:
        try:
            effect()
        except ConveyorError as exc:  # e.g. the PR stopped being mergeable meanwhile: the next step re-decides
            log.warning("promotion %s: %s (%s)", pid, exc.detail, exc.rule)

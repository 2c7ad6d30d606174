"""The demo's board: a stage that is over when shown stops its clock (the prod self-approval row
used to keep counting: 131.9 s)."""

from __future__ import annotations

import time

from conveyor.demo.view import Board


def test_a_passed_stage_keeps_no_running_clock() -> None:
    board = Board("demo")
    st = board.passed("prod: Dana's own approval refused (review.self-approval)")
    time.sleep(0.2)
    assert st.ok is True and st.seconds == 0.0

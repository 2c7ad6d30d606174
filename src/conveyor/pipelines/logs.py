"""Run logs: stored in the database in numbered chunks, read back by the API and the dashboard.

Storing chunks in the database (not on the runner's disk) lets any server process stream any
run's log, whichever machine executes it. Only the runner holding a run's lease sends its chunks
(``runs.append_logs`` numbers them), so the run-wide sequence is gap-free and ordered.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.pipelines.models import LogChunk


@dataclass(frozen=True)
class ChunkView:
    seq: int
    step: int
    text: str


def read_chunks(session: Session, run_id: int, after: int = 0, limit: int = 1000) -> list[ChunkView]:
    rows = session.execute(
        select(LogChunk.seq, LogChunk.step_index, LogChunk.text)
        .where(LogChunk.run_id == run_id, LogChunk.seq > after)
        .order_by(LogChunk.seq)
        .limit(limit)
    ).all()
    return [ChunkView(seq, step, text) for seq, step, text in rows]

"""Run logs: stored in the database in numbered chunks, read back by the API and the dashboard.

Storing chunks in the database (not on the runner's disk) lets any server process stream any
run's log, whichever machine executes it. Only the runner holding a run's lease sends its chunks
(``runs.append_logs`` numbers them), so the run-wide sequence is gap-free and ordered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Database, NotFound
from conveyor.pipelines.models import FINISHED, LogChunk, Run

POLL_SECONDS = 0.25


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


async def event_stream(db: Database, run_id: int, after: int,
                       disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[bytes]:
    """A run's log as server-sent events: one ``log`` event per stored chunk after ``after``, then
    ``end`` once the run is over. The API's stream and the dashboard's use this one. Raises
    NotFound before the first event, so a missing run is a 404, not an empty stream. Each poll reads
    in a worker thread through ``reads()``: four times a second per viewer never queues for SQLite's
    write turn, and never on the event loop (db.off-event-loop)."""

    def poll(cursor: int) -> tuple[list[ChunkView], str, int]:
        with db.reads() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no pipeline run {run_id}", rule="run.exists")
            return read_chunks(s, run_id, cursor, 500), run.state, run.log_seq

    first = await asyncio.to_thread(poll, after)

    async def events() -> AsyncIterator[bytes]:
        cursor, (chunks, state, last) = after, first
        while True:
            for c in chunks:
                cursor = c.seq
                data = json.dumps({"seq": c.seq, "step": c.step, "text": c.text})
                yield f"id: {c.seq}\nevent: log\ndata: {data}\n\n".encode()
            if state in FINISHED and cursor >= last:
                yield f"event: end\ndata: {json.dumps({'state': state})}\n\n".encode()
                return
            if await disconnected():
                return
            if not chunks:
                await asyncio.sleep(POLL_SECONDS)
            chunks, state, last = await asyncio.to_thread(poll, cursor)

    return events()

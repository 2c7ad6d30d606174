"""Run logs: buffered by the executing worker, stored in the database in numbered chunks.

Storing chunks in the database (not on the worker's disk) lets any server process stream any
run's log, whichever machine executes it. Only the worker that holds a run's lease writes its
chunks, so the run-wide sequence number it allocates is gap-free and ordered.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conveyor.core import Database
from conveyor.pipelines.models import LogChunk, Run

FLUSH_BYTES = 32 * 1024
FLUSH_SECONDS = 0.3


class LogWriter:
    def __init__(self, db: Database, run_id: int) -> None:
        self.db, self.run_id = db, run_id
        self._lock = threading.Lock()
        self._parts: list[tuple[int, str]] = []  # (step index, text)
        self._size = 0
        self._step = 0
        self._last_flush = time.monotonic()

    def set_step(self, index: int) -> None:
        with self._lock:
            self._step = index

    def write(self, text: str) -> None:
        with self._lock:
            self._parts.append((self._step, text))
            self._size += len(text)
            big = self._size >= FLUSH_BYTES
        if big:
            self.flush()

    def line(self, text: str) -> None:
        self.write(text.rstrip("\n") + "\n")

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Store what was written, one chunk per step, in one transaction."""
        with self._lock:
            parts, self._parts, self._size = self._parts, [], 0
            self._last_flush = time.monotonic()
        chunks: list[tuple[int, str]] = []
        for step, text in parts:
            if chunks and chunks[-1][0] == step:
                chunks[-1] = (step, chunks[-1][1] + text)
            else:
                chunks.append((step, text))
        if not chunks:
            return
        with self.db.session() as s:
            last = s.execute(
                update(Run).where(Run.id == self.run_id).values(log_seq=Run.log_seq + len(chunks))
                .returning(Run.log_seq)
            ).scalar_one()
            for i, (step, text) in enumerate(chunks):
                s.add(LogChunk(run_id=self.run_id, seq=last - len(chunks) + 1 + i, step_index=step, text=text))


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

"""What the person watching the demo sees: stages with durations, then a summary table."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

T = TypeVar("T")


@dataclass
class Stage:
    name: str
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    ok: bool | None = None
    detail: str = ""

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


class Board:
    def __init__(self, title: str) -> None:
        self.title = title
        self.stages: list[Stage] = []
        self.links: list[str] = []
        self.on_change: Callable[[], None] = lambda: None

    def begin(self, name: str, detail: str = "") -> Stage:
        st = Stage(name, detail=detail)
        self.stages.append(st)
        self.on_change()
        return st

    def passed(self, name: str, detail: str = "") -> Stage:
        """A stage that is over as soon as it is shown (a refusal observed): its time does not run on."""
        st = self.begin(name, detail)
        st.ok, st.ended = True, st.started
        self.on_change()
        return st

    def run(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one stage, timing it; its result (when a string) becomes its detail."""
        st = self.begin(name)
        try:
            result = fn(*args)
        except BaseException as exc:
            st.ok, st.ended, st.detail = False, time.monotonic(), str(exc)[:300]
            self.on_change()
            raise
        st.ok, st.ended = True, time.monotonic()
        if isinstance(result, str) and result:
            st.detail = result[:200]
        self.on_change()
        return result

    def progress(self, line: str) -> None:
        if self.stages:
            self.stages[-1].detail = line[:120]
            self.on_change()

    def render(self) -> RenderableType:
        table = Table(title=self.title, expand=False, show_lines=False)
        table.add_column("", width=2)
        table.add_column("stage")
        table.add_column("time", justify="right")
        table.add_column("detail", overflow="fold")
        for st in self.stages:
            mark = {True: Text("✔", style="green"), False: Text("✘", style="bold red"),
                    None: Text("…", style="yellow")}[st.ok]
            table.add_row(mark, st.name, f"{st.seconds:5.1f}s", st.detail)
        parts: list[RenderableType] = [table]
        if self.links:
            parts.append(Text("\n".join(self.links), style="dim"))
        return Group(*parts)


def summary_table(rows: list[dict[str, str]]) -> Table:
    table = Table(title="Where each version runs")
    for col in ("environment", "version", "commit", "image digest", "health", "lead time"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["env"], r["version"], r["commit"][:12], r["digest"][:19], r["health"], r["lead_time"])
    return table

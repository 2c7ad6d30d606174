"""The alias-bomb refusal, timed: a pipeline.yaml of a few hundred bytes of nested YAML aliases
("billion laughs", 9 levels x 9 aliases = 387 million nodes expanded) pushed to a running server.

Before (issue 13) this stalled the server ~20 s and left it at 1.3 GB. Target: refused in under
50 ms, server memory unchanged. Measured three ways, side by side with the anchor (PyYAML's own
``yaml.safe_load``, what every tool that reads YAML with PyYAML does):

- the parser alone: ``core.yamlspec.load_with_marks`` vs ``yaml.safe_load`` on the same text
  (the anchor only *builds* the shared structure; it is walking it that explodes);
- the server: the time from the push until the run's failed ``setup`` check names the alias
  (this includes git, the event outbox and the worker, so it is an upper bound), and the
  server's resident memory before and after.

Run: python benchmarks/yaml_bomb.py [--reps 20]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.forge.helpers import new_repo  # noqa: E402
from tests.pipelines.helpers import wait_for_run  # noqa: E402
from tests.support.bad_input import alias_bomb  # noqa: E402

from benchmarks.common import conveyor_server  # noqa: E402
from conveyor.core.yamlspec import SpecError, load_with_marks  # noqa: E402


def rss_mb(pid: int) -> float:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def parser_times(text: str, reps: int) -> tuple[float, float]:
    ours, anchor = [], []
    for _ in range(reps):
        started = time.perf_counter()
        try:
            load_with_marks(text, ".conveyor/pipeline.yaml")
            raise AssertionError("the bomb was accepted")
        except SpecError:
            pass
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        yaml.safe_load(text)
        anchor.append(time.perf_counter() - started)
    return statistics.median(ours), statistics.median(anchor)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    bomb = alias_bomb()
    ours, anchor = parser_times(bomb, args.reps)
    print(f"document: {len(bomb)} bytes, {9 ** 9:,} nodes once expanded")
    print(f"refusal by core.yamlspec: {ours * 1000:.1f} ms (median of {args.reps}); "
          f"yaml.safe_load builds the shared structure in {anchor * 1000:.1f} ms "
          f"(ratio {ours / anchor:.1f}x); target < 50 ms")
    with tempfile.TemporaryDirectory(prefix="yaml-bomb-") as tmp_s, conveyor_server(Path(tmp_s)) as server:
        assert server.proc is not None
        tmp = Path(tmp_s)
        before = rss_mb(server.proc.pid)
        wc = new_repo(server, tmp / "wc")
        (wc.path / ".conveyor").mkdir()
        (wc.path / ".conveyor" / "pipeline.yaml").write_text(bomb)
        wc.git("add", ".conveyor/pipeline.yaml")
        wc.git("commit", "-q", "-m", "bomb")
        started = time.perf_counter()
        code, out = wc.push("main")
        assert code == 0, out
        run = wait_for_run(server, wc.repo, wc.head(), "ci")
        elapsed = time.perf_counter() - started
        after = rss_mb(server.proc.pid)
        assert run["state"] == "failure" and "aliases expand" in run["message"], run
        print(f"server: push to failed check {elapsed * 1000:.0f} ms (git, outbox and worker included); "
              f"message: {run['message'][:90]}")
        print(f"server memory: {before:.0f} MB before, {after:.0f} MB after ({after - before:+.0f} MB)")


if __name__ == "__main__":
    main()

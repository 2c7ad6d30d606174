"""`conveyor demo`: run the workflow end to end with a live progress view."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from conveyor.demo.platform import FLUX_CLUSTER, Platform, stop_processes
from conveyor.demo.scenario import Scenario
from conveyor.demo.view import Board, summary_table


def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave everything running for exploration"),
    data_dir: Path = typer.Option(None, "--data-dir", help="Where the demo keeps its state (default: a new temp dir)"),
    report: Path = typer.Option(None, "--report", help="Write what happened as JSON here"),
    stop: bool = typer.Option(False, "--stop", help="Stop and remove a demo left running with --keep"),
    agent: str = typer.Option("conveyor", "--agent",
                              help="conveyor, or flux: cluster nonprod (dev, qa) runs Flux v2's controllers"),
    base_refresh: bool = typer.Option(True, "--base-refresh/--no-base-refresh",
                                      help="after the good change: refresh the base image; hello is rebuilt "
                                           "as a security update through dev and qa (extra approval)"),
) -> None:
    """Run the whole GitOps workflow: PR -> PR pipeline -> CI -> dev -> qa -> prod, and a rollback."""
    console = Console()
    if stop:
        if data_dir is None:
            raise typer.BadParameter("--stop needs the --data-dir of the demo to stop")
        stop_processes(data_dir)
        console.print(f"stopped the demo in {data_dir}")
        return
    # Kubelet socket paths are length-limited: keep the data dir short.
    root = data_dir or Path(tempfile.mkdtemp(prefix="cvy-demo-", dir="/tmp"))
    if agent not in ("conveyor", "flux"):
        raise typer.BadParameter("--agent is conveyor or flux")
    platform = Platform(root.resolve(), flux_clusters=(FLUX_CLUSTER,) if agent == "flux" else ())
    board = Board(f"Conveyor demo — {root}")
    scenario: Scenario | None = None
    ok = False
    started = time.monotonic()
    try:
        with Live(board.render(), console=console, refresh_per_second=2, transient=False) as live:
            def refresh() -> None:
                live.update(board.render())

            board.on_change = refresh
            ticker = _Ticker(refresh)
            ticker.start()
            try:
                step = board.run
                step("Conveyor server", platform.start_server)
                board.links.append(f"dashboard: {platform.url}/   API: {platform.url}/docs")
                step("users: dana (developer), theo (reviewer), olga + omar (cluster admins)", platform.create_users)
                step("clusters nonprod (dev, qa) and prod", platform.create_clusters, board.progress)
                step("base image debian-python:12 into the registry cache", platform.base_image, board.progress)
                step("GitOps repo: main + env/dev, env/qa, env/prod", platform.init_gitops)
                if agent == "flux":
                    step(f"Flux on {FLUX_CLUSTER} (events to Conveyor), Conveyor's agent inside prod",
                         platform.start_agents, board.progress)
                else:
                    step("an agent inside each cluster, told by webhooks", platform.start_agents, board.progress)
                scenario = Scenario(platform, board)
                scenario.set_api_keys()  # before the first release: its rendering checks the Secret is there
                scenario.wc = step("application repo from examples/hello", platform.create_app_repo, root / "work")
                scenario.first_release()
                scenario.change()
                if base_refresh:
                    scenario.security_update()
                scenario.broken_change()
            finally:
                ticker.stop()
            ok = True
        rows = scenario.summary()
        console.print(summary_table(rows))
        console.print(f"Dashboard: {platform.url}/   ({time.monotonic() - started:.0f}s in all)")
    except Exception as exc:
        console.print(Text("demo failed: ", style="bold red") + Text(str(exc)))
        console.print(Text(f"logs: {root / 'logs'}"))
    finally:
        if report is not None:
            out = scenario.outcome.__dict__ if scenario else {}
            report.write_text(json.dumps({"ok": ok, "url": platform.url, "data_dir": str(root),
                                          "tokens": str(root / "tokens.json"), **out}, indent=2))
        if keep:
            console.print(f"left running: {platform.url} (stop with `conveyor demo --stop --data-dir {root}`)")
        else:
            platform.stop(remove=data_dir is None)
    raise typer.Exit(0 if ok else 1)


class _Ticker:
    """Refreshes the live view every second so running stages show their time ticking."""

    def __init__(self, refresh: Callable[[], None]) -> None:
        import threading

        self._refresh = refresh
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(1):
            self._refresh()

"""Detached processes with pid files: start, check, stop — no supervisor process of its own.

Each process runs in its own session, so it outlives the CLI or server that started it, and, when
its spec names one, in a network namespace (``ProcessSpec.netns``, joined between fork and exec so
its argv stays the program's own). It writes stdout and stderr to ``logs/<name>.log`` and has
``run/<name>.pid`` holding ``<pid> <start time>``. The start time (field 22 of /proc/<pid>/stat)
guards against a recycled pid: a pid file whose process has a different start time, or is a
zombie, counts as dead. Restarting the dead ones is the caller's job (``conveyor cluster create``
and ``conveyor up`` do it).

Scans over every process (stragglers no pid file tracks, a socket path on a command line) go
through psutil. The start time stays the raw field 22 (clock ticks since boot) rather than psutil's
float ``create_time()``: it is what the pid files of clusters already running hold, and a changed
format would make each of their processes look dead (and start twice) after an upgrade.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from conveyor.core import netns as netns_mod

MAX_LOG_BYTES = 64 * 1024 * 1024


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    netns: str | None = None  # a named network namespace (core.netns) to run in; None: the host's


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest  # rest[0] is field 3 (state), rest[19] is field 22 (start time)


def start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[19]


class ProcessGroup:
    """The processes of one cluster: pid files in ``run_dir``, logs in ``log_dir``."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The live pid of a process, or None when it is not running."""
        try:
            pid_s, started = self.pid_file(name).read_text().split()
            pid = int(pid_s)
        except (OSError, ValueError):
            return None
        return pid if start_time(pid) == started else None

    def running(self, name: str) -> bool:
        return self.pid(name) is not None

    def matches(self, spec: ProcessSpec) -> bool:
        """Whether the running process is the one ``spec`` describes: same argv, same network
        namespace. A changed configuration (a registry port to forward, an upgrade's new flag) or a
        node namespace made anew after a reboot shows up here, and the caller restarts it."""
        pid = self.pid(spec.name)
        if pid is None:
            return False
        try:
            argv = psutil.Process(pid).cmdline()
            actual_ns = os.stat(f"/proc/{pid}/ns/net")  # psutil has no namespaces
            wanted_ns = os.stat(netns_mod.path(spec.netns) if spec.netns else "/proc/self/ns/net")
        except (OSError, psutil.Error):
            return False
        same_ns = (actual_ns.st_dev, actual_ns.st_ino) == (wanted_ns.st_dev, wanted_ns.st_ino)
        return same_ns and argv == spec.argv

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("*.pid"))

    def kill_untracked(self, spec: ProcessSpec) -> int:
        """Kill this cluster's copies of ``spec``'s program that no pid file tracks: an interrupted
        create can die between starting a process and writing its pid file. Returns how many."""
        if self.running(spec.name):
            return 0
        program = os.path.basename(spec.argv[0])
        marker = str(self.run_dir.parent) + "/"
        killed = 0
        for pid, argv in _command_lines():
            if argv and os.path.basename(argv[0]) == program and any(marker in a for a in argv[1:]):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
        return killed

    def start(self, spec: ProcessSpec) -> int:
        """Start a process unless it runs already; returns its pid."""
        existing = self.pid(spec.name)
        if existing is not None:
            return existing
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file(spec.name)
        if log.exists() and log.stat().st_size > MAX_LOG_BYTES:
            log.replace(log.with_suffix(".log.1"))
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": os.environ.get("HOME", "/")}
        env.update(spec.env)
        join = netns_mod.preexec(spec.netns) if spec.netns else None
        where = f" (network namespace {spec.netns})" if spec.netns else ""
        try:
            with open(log, "ab") as out:
                out.write(
                    f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting{where}: {' '.join(spec.argv)}\n".encode()
                )
                out.flush()
                proc = subprocess.Popen(  # noqa: PLW1509 - the preexec_fn is one setns call
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=join,
                )
        finally:
            if join is not None:
                netns_mod.close_preexec(join)
        started = None
        for _ in range(100):
            started = start_time(proc.pid)
            if started is not None or proc.poll() is not None:
                break
            time.sleep(0.01)
        tmp = self.pid_file(spec.name).with_suffix(".tmp")
        tmp.write_text(f"{proc.pid} {started or 0}\n")
        tmp.replace(self.pid_file(spec.name))
        return proc.pid

    def stop(self, name: str, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; removes the pid file."""
        pid = self.pid(name)
        if pid is not None:
            _terminate(pid, timeout)
        self.pid_file(name).unlink(missing_ok=True)

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            with open(self.log_file(name), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 16384))
                return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _terminate(pid: int, timeout: float) -> None:
    started = start_time(pid)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if start_time(pid) != started or started is None:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        if start_time(pid) is None:
            return
        time.sleep(0.1)


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _command_lines() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every other process that can be read (kernel threads have an empty argv)."""
    me = os.getpid()
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"]
        if proc.pid != me and argv:
            yield proc.pid, argv


def pids_with_arg(fragment: str) -> list[int]:
    """Processes whose command line contains ``fragment`` (e.g. a cluster-specific socket path).
    The line is the argv with a space after each argument (as /proc's NUL-terminated one reads), so
    a fragment ending in a space matches a whole last argument too."""
    return [pid for pid, argv in _command_lines() if fragment in "".join(f"{a} " for a in argv)]

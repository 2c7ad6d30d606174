"""A throwaway PostgreSQL server for tests (Debian's packages), on loopback, owned by the test run."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path


def _pg_bin() -> Path:
    env = os.environ.get("CONVEYOR_PG_BIN")
    if env:
        return Path(env)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: install Debian's 'postgresql' package")
    return Path(candidates[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        self.before_stop: list[Callable[[], None]] = []  # clients to stop before the database goes

    def _run_as(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, check=True, capture_output=True)

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        self._run_as([str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", self.user, "-E", "UTF8"])
        self._run_as(
            [
                str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"), "-w", "start",
                "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c max_connections=300",
            ]
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError("PostgreSQL did not become ready")

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
            check=True, capture_output=True,
        )
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        for fn in self.before_stop:
            fn()
        try:
            self._run_as([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

"""Git smart HTTP, served by git's own ``git http-backend`` run as a CGI program.

This ASGI app only authenticates, authorises and pipes bytes: request bodies stream into
the CGI's stdin and its stdout streams back, so memory stays flat for any repository size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anyio import to_thread

from conveyor.core import AppState, ConveyorError, Forbidden, NotFound, Permission, Principal
from conveyor.core.http import principal_from_header_readonly, problem_response
from conveyor.forge.pushes import process_spool
from conveyor.forge.repos import get_repo

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_PATH = re.compile(r"^/([A-Za-z0-9][A-Za-z0-9._-]{0,99})\.git(/info/refs|/git-upload-pack|/git-receive-pack)$")
CHUNK = 256 * 1024


class _Backend:
    """``git http-backend`` started with ``subprocess.Popen``, its pipes read and written
    asynchronously.

    Not ``asyncio.create_subprocess_exec``: under uvloop (uvicorn's loop) that starts the child
    with fork() on the event loop thread, and fork copies the page tables of the whole server.
    Measured with py-spy during 20 concurrent ``git ls-remote`` (benchmarks/forge_concurrency.py):
    60% of the event loop's samples were inside that call, so every other request waited.
    Python's Popen uses vfork and returns in about a millisecond (run in a worker thread all
    the same: it waits for the child's exec).
    """

    def __init__(self, popen: subprocess.Popen[bytes], stdin: asyncio.StreamWriter,
                 stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 transports: list[asyncio.BaseTransport]) -> None:
        self.popen, self.stdin, self.stdout, self.stderr = popen, stdin, stdout, stderr
        self.transports = transports

    def close(self) -> None:
        """Close every pipe now: uvloop keeps a read pipe open after EOF, and a transport left
        to the garbage collector closes its descriptor number after it may have been reused."""
        for t in self.transports:
            t.close()

    @classmethod
    async def start(cls, env: dict[str, str]) -> _Backend:
        loop = asyncio.get_running_loop()
        # Our own pipes, so that each parent end has exactly one owner, its transport (with
        # ``stdout=PIPE`` Popen would hold file objects for the same descriptors, and a second
        # close of a reused descriptor number confuses the event loop).
        child_in, parent_in = os.pipe()
        parent_out, child_out = os.pipe()
        parent_err, child_err = os.pipe()
        try:
            # In a worker thread: Popen returns only once the child has exec'd, which on a busy
            # machine took long enough to show as a third of the event loop's samples.
            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(["git", "http-backend"], env=env, stdin=child_in, stdout=child_out,
                                        stderr=child_err)

            p = await to_thread.run_sync(spawn)
        except BaseException:
            for fd in (parent_in, parent_out, parent_err):
                os.close(fd)
            raise
        finally:
            for fd in (child_in, child_out, child_err):
                os.close(fd)
        # Who closes a pipe's descriptor: asyncio's own loop closes the file object; uvloop's
        # libuv closes the descriptor and *then* closes the file object too, which in a threaded
        # server closed descriptors other threads had just opened (seen as "file is not a
        # database" and EBADF in Popen). Under uvloop the file objects therefore do not own it.
        own = isinstance(loop, asyncio.BaseEventLoop)
        pipes = [os.fdopen(parent_out, "rb", buffering=0, closefd=own),
                 os.fdopen(parent_err, "rb", buffering=0, closefd=own),
                 os.fdopen(parent_in, "wb", buffering=0, closefd=own)]
        transports: list[asyncio.BaseTransport] = []
        try:
            stdout = asyncio.StreamReader(limit=CHUNK, loop=loop)
            t_out, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout, loop=loop), pipes[0])
            transports.append(t_out)
            stderr = asyncio.StreamReader(loop=loop)
            t_err, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stderr, loop=loop), pipes[1])
            transports.append(t_err)
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), pipes[2])
            transports.append(transport)
        except BaseException:
            p.kill()
            p.wait()
            for t in transports:
                t.close()
            for fd in (parent_out, parent_err, parent_in)[len(transports):]:
                os.close(fd)
            raise
        return cls(p, asyncio.StreamWriter(transport, protocol, None, loop), stdout, stderr, transports)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    async def wait(self) -> int:
        """The exit status; called once its output has ended, so the wait is short."""
        delay = 0.0005
        while (rc := self.popen.poll()) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return rc


class GitHttpApp:
    def __init__(self, state: AppState) -> None:
        self.state = state

    def _authorise(self, repo_name: str, authorization: str | None, write: bool) -> Principal:
        # Read-only lookups: with 20 concurrent clients, authenticating in write-lock sessions
        # queued every git request behind pushes being recorded (p95 1.6 s, max 14 s).
        db = self.state.db
        principal = principal_from_header_readonly(db, authorization, self.state.settings.anonymous_read)
        if principal.scope is None:
            principal.require(Permission.WRITE if write else Permission.READ)
        with db.reads() as s:
            repo = get_repo(s, repo_name)
            kind = repo.kind
        if principal.scope is not None and (write or not principal.scope.may_read_repo(repo_name, kind)):
            raise Forbidden(f"this token belongs to {principal.scope.describe()} and may not "
                            f"{'push to' if write else 'read'} '{repo_name}'", rule="token.scope")
        return principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        # Mounted at /git: strip the mount point exactly once, whichever way the ASGI server
        # reports it (in root_path, or still in path). A repository may itself be named "git...".
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root):]
        elif not root.endswith("/git") and path.startswith("/git/"):
            path = path[len("/git"):]
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        m = _PATH.match(path)
        try:
            if not m:
                raise NotFound("not a git smart-HTTP endpoint (dumb HTTP is not served)", rule="git.endpoint")
            repo_name, endpoint = m.group(1), m.group(2)
            if endpoint == "/info/refs":
                service = dict(p.partition("=")[::2] for p in query.split("&") if p).get("service", "")
                if service not in ("git-upload-pack", "git-receive-pack"):
                    raise Forbidden("only the smart HTTP protocol is served", rule="git.smart-only")
            else:
                service = endpoint[1:]
            write = service == "git-receive-pack"
            principal = await to_thread.run_sync(self._authorise, repo_name, headers.get("authorization"), write)
        except ConveyorError as exc:
            resp = problem_response(exc)
            await resp(scope, receive, send)
            return
        after_output = None
        if write and scope["method"] == "POST":
            # Record the push before the client sees the end of the response, so whatever it
            # does next (open a PR, read the PR) already sees the new refs in the database.
            async def after_output() -> None:
                await to_thread.run_sync(process_spool, self.state.db, self.state.settings, repo_name)

        await self._run_backend(scope, receive, send, path, query, headers, principal, after_output)

    async def _run_backend(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        query: str,
        headers: dict[str, str],
        principal: Principal,
        after_output: Callable[[], Awaitable[None]] | None,
    ) -> None:
        settings = self.state.settings
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(settings.repos_dir),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(settings.data_dir),
            "REQUEST_METHOD": scope["method"],
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_USER": principal.name,
            # The pre-receive hook lets those who manage repositories force-push others' PR branches.
            "CONVEYOR_PUSHER_MAY_MANAGE": "1" if principal.can(Permission.MANAGE_REPO) else "0",
            "REMOTE_ADDR": (scope.get("client") or ("127.0.0.1", 0))[0],
            "SERVER_PROTOCOL": "HTTP/1.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
        }
        if principal.scope is not None and principal.scope.commit:
            # A run reads its commit, not the repository's branches: no ref is advertised, and only
            # objects reachable from the refs can be asked for by id (git fetch <sha> works).
            env.update(GIT_CONFIG_COUNT="2", GIT_CONFIG_KEY_0="uploadpack.hideRefs", GIT_CONFIG_VALUE_0="refs/",
                       GIT_CONFIG_KEY_1="uploadpack.allowReachableSHA1InWant", GIT_CONFIG_VALUE_1="true")
        for h, var in (
            ("content-type", "CONTENT_TYPE"),
            ("content-length", "CONTENT_LENGTH"),
            ("content-encoding", "HTTP_CONTENT_ENCODING"),
            ("git-protocol", "HTTP_GIT_PROTOCOL"),
        ):
            if h in headers:
                env[var] = headers[h]
        proc = await _Backend.start(env)

        async def feed() -> None:
            assert proc.stdin
            try:
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        break
                    body = msg.get("body", b"")
                    if body:
                        proc.stdin.write(body)
                        await proc.stdin.drain()
                    if not msg.get("more_body", False):
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                proc.stdin.close()

        feeder = asyncio.create_task(feed())
        stderr_task = asyncio.create_task(proc.stderr.read())
        status = 200
        try:
            out_headers: list[tuple[bytes, bytes]] = []
            while True:
                line = await proc.stdout.readline()
                if not line or line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
                value = value.strip()
                if name.lower() == "status":
                    status = int(value.split()[0])
                else:
                    out_headers.append((name.lower().encode(), value.encode("latin-1")))
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            while True:
                chunk = await proc.stdout.read(CHUNK)
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await proc.wait()
            if after_output is not None:
                try:
                    await after_output()
                except Exception:
                    # The refs are updated; start-up recovery replays the spooled push.
                    log.exception("recording push to %s failed", path)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            raise
        finally:
            await feeder
            rc = await proc.wait()
            err = await stderr_task
            proc.close()
            if rc != 0 or err.strip():
                log.info("git http-backend %s exited %s: %s", path, rc, err.decode(errors="replace").strip())

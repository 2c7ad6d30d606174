"""Git smart HTTP, served by git's own ``git http-backend`` run as a CGI program.

This ASGI app only authenticates, authorises and pipes bytes: request bodies stream into
the CGI's stdin and its stdout streams back, so memory stays flat for any repository size.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anyio import to_thread

from conveyor.core import AppState, ConveyorError, Forbidden, NotFound, Permission, Principal
from conveyor.core.http import principal_from_header, problem_response
from conveyor.forge.pushes import process_spool
from conveyor.forge.repos import get_repo

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_PATH = re.compile(r"^/([A-Za-z0-9][A-Za-z0-9._-]{0,99})\.git(/info/refs|/git-upload-pack|/git-receive-pack)$")
CHUNK = 256 * 1024


class GitHttpApp:
    def __init__(self, state: AppState) -> None:
        self.state = state

    def _authorise(self, repo_name: str, authorization: str | None, write: bool) -> Principal:
        with self.state.db.session() as s:
            principal = principal_from_header(s, authorization, self.state.settings.anonymous_read)
            if principal.scope is None:
                principal.require(Permission.WRITE if write else Permission.READ)
            repo = get_repo(s, repo_name)
            if principal.scope is not None and (write or not principal.scope.may_read_repo(repo.name, repo.kind)):
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
        proc = await asyncio.create_subprocess_exec(
            "git", "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=CHUNK,
        )
        assert proc.stdin and proc.stdout and proc.stderr

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
        try:
            status = 200
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
            if rc != 0 or err.strip():
                log.info("git http-backend %s exited %s: %s", path, rc, err.decode(errors="replace").strip())

"""A small asynchronous OCI Distribution client: pulls from upstream registries (pull-through
cache, import) and pushes into Conveyor (import). Handles Basic and Docker token authentication
and streams blobs, verifying every digest it is given."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx

from conveyor.core.outbound import body_excerpt, status_summary
from conveyor.registry import mediatypes

ACCEPT = ", ".join([
    mediatypes.OCI_INDEX, mediatypes.OCI_MANIFEST, mediatypes.DOCKER_LIST, mediatypes.DOCKER_MANIFEST,
])
_PARAM = re.compile(r'(\w+)="([^"]*)"')
_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags|referrers)/")


class RegistryClientError(Exception):
    """``str()`` is safe to show anyone (what failed and the status); ``excerpt`` holds the first
    bytes of the registry's answer, which only admins may see (it may be an internal page)."""

    def __init__(self, message: str, status: int | None = None, excerpt: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.excerpt = excerpt


class DigestMismatch(RegistryClientError):
    pass


def _scope_key(request: httpx.Request) -> tuple[str, str, str]:
    m = _REPO_PATH.match(request.url.path)
    repo = m.group(1) if m else ""
    action = "pull" if request.method in ("GET", "HEAD") else "push"
    return (request.url.host, repo, action)


class TokenAuth(httpx.Auth):
    """Basic credentials, answering Bearer challenges with the Docker token flow.

    Only response bodies of challenges and token requests are read, so streamed blob
    downloads pass through untouched (httpx's ``requires_response_body`` would buffer them).
    """

    def __init__(self, username: str | None, password: str | None) -> None:
        self.username = username
        self.password = password
        self._headers: dict[tuple[str, str, str], str] = {}

    def _basic(self) -> str | None:
        if self.username is None and self.password is None:
            return None
        raw = f"{self.username or ''}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise NotImplementedError("RegistryClient is asynchronous")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        key = _scope_key(request)
        cached = self._headers.get(key)
        if cached:
            request.headers["Authorization"] = cached
        response = yield request
        if response.status_code != 401:
            return
        await response.aread()
        challenge = response.headers.get("www-authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            basic = self._basic()
            if basic is None:
                return
            header = basic
        elif scheme == "bearer":
            params = dict(_PARAM.findall(challenge))
            realm = params.pop("realm", "")
            if not realm:
                return
            query = {k: v for k, v in params.items() if k in ("service", "scope")}
            token_req = httpx.Request("GET", realm + ("?" + urlencode(query) if query else ""))
            basic = self._basic()
            if basic:
                token_req.headers["Authorization"] = basic
            token_resp = yield token_req
            await token_resp.aread()
            if token_resp.status_code != 200:
                return
            body = token_resp.json()
            token = body.get("token") or body.get("access_token")
            if not token:
                return
            header = f"Bearer {token}"
        else:
            return
        self._headers[key] = header
        request.headers["Authorization"] = header
        yield request


@dataclass(frozen=True)
class FetchedManifest:
    body: bytes
    media_type: str
    digest: str


def _digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class RegistryClient:
    """Talks to one registry. ``base_url`` may carry a path: a namespace prefixed to every repository."""

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout: float = 30.0,
        verify: bool = True,
        bearer: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport``: the server passes ``core.AsyncOutboundTransport`` so that every
        request it makes (token realms and redirects included) follows the outbound policy."""
        parts = urlsplit(base_url.rstrip("/"))
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.namespace = parts.path.strip("/")
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        self.http = httpx.AsyncClient(
            base_url=self.origin,
            auth=None if bearer else TokenAuth(username, password),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            verify=verify,
            headers=headers,
            follow_redirects=True,
            transport=transport,
        )

    async def close(self) -> None:
        await self.http.aclose()

    def _repo(self, repo: str) -> str:
        return f"{self.namespace}/{repo}" if self.namespace else repo

    @staticmethod
    def _check(resp: httpx.Response, what: str) -> None:
        if resp.status_code >= 400:
            try:
                excerpt: str | None = body_excerpt(resp.content)
            except httpx.ResponseNotRead:  # a streamed response: its body is not read for an error
                excerpt = None
            raise RegistryClientError(f"{what}: {status_summary(resp.status_code)}", resp.status_code, excerpt)

    async def get_manifest(
        self, repo: str, ref: str, max_bytes: int = mediatypes.MAX_MANIFEST_BYTES
    ) -> FetchedManifest:
        resp = await self.http.get(f"/v2/{self._repo(repo)}/manifests/{ref}", headers={"Accept": ACCEPT})
        self._check(resp, f"GET manifest {repo}:{ref}")
        body = resp.content
        if len(body) > max_bytes:
            raise RegistryClientError(f"manifest {repo}:{ref} is larger than {max_bytes} bytes")
        algorithm = ref.split(":", 1)[0] if ":" in ref else "sha256"
        digest = _digest_of(body, algorithm)
        if ":" in ref and digest != ref:
            raise DigestMismatch(f"manifest {repo}@{ref} has digest {digest}")
        header = resp.headers.get("docker-content-digest")
        if ":" not in ref and header and header.startswith("sha256:") and header != digest:
            raise DigestMismatch(f"manifest {repo}:{ref}: the registry says {header}, the content is {digest}")
        media_type = mediatypes.base_media_type(resp.headers.get("content-type")) or mediatypes.OCI_MANIFEST
        return FetchedManifest(body=body, media_type=media_type, digest=digest)

    async def head_manifest(self, repo: str, ref: str) -> str | None:
        resp = await self.http.head(f"/v2/{self._repo(repo)}/manifests/{ref}", headers={"Accept": ACCEPT})
        if resp.status_code == 404:
            return None
        self._check(resp, f"HEAD manifest {repo}:{ref}")
        digest = resp.headers.get("docker-content-digest")
        return str(digest) if digest else None

    async def blob_size(self, repo: str, digest: str) -> int | None:
        resp = await self.http.head(f"/v2/{self._repo(repo)}/blobs/{digest}")
        if resp.status_code == 404:
            return None
        self._check(resp, f"HEAD blob {repo}@{digest}")
        return int(resp.headers.get("content-length", "0"))

    async def stream_blob(self, repo: str, digest: str) -> AsyncIterator[bytes]:
        """The blob's bytes; raises DigestMismatch at the end if they do not match ``digest``."""
        algorithm, _, want = digest.partition(":")
        h = hashlib.new(algorithm)
        async with self.http.stream("GET", f"/v2/{self._repo(repo)}/blobs/{digest}") as resp:
            self._check(resp, f"GET blob {repo}@{digest}")
            async for chunk in resp.aiter_bytes(1 << 20):
                h.update(chunk)
                yield chunk
        if h.hexdigest() != want:
            raise DigestMismatch(f"blob {repo}@{digest} has digest {algorithm}:{h.hexdigest()}")

    async def push_blob(self, repo: str, digest: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """Upload a blob unless the registry has it; the registry verifies the digest."""
        path = f"/v2/{self._repo(repo)}/blobs"
        head = await self.http.head(f"{path}/{digest}")
        if head.status_code == 200:
            return
        # Open a session first (no body): authentication happens here, so the streamed body
        # below never needs a replay.
        start = await self.http.post(f"{path}/uploads/")
        self._check(start, f"start upload {repo}")
        location = start.headers.get("location", "")
        url = httpx.URL(location) if location.startswith("http") else httpx.URL(self.origin + location)
        url = url.copy_merge_params({"digest": digest})
        resp = await self.http.put(url, content=chunks, headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(size)})
        self._check(resp, f"upload {repo}@{digest}")

    async def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        resp = await self.http.put(f"/v2/{self._repo(repo)}/manifests/{ref}", content=body,
                                   headers={"Content-Type": media_type})
        self._check(resp, f"PUT manifest {repo}:{ref}")
        return resp.headers.get("docker-content-digest") or _digest_of(body)

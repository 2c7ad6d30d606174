"""Outbound requests: the one policy for every URL the server itself fetches.

Webhooks and pull-through upstreams are URLs that users choose and the *server* fetches, from
inside the network it runs in. Without a policy any developer can make it post to or read from
loopback services, the cloud metadata endpoint (169.254.169.254) or hosts on the private network,
and read the answers back through the delivery log or a registry error message (issue 13).

The rules, applied to every connection (every redirect hop included, because the transport
below sees each hop as a request of its own):

- only ``http`` and ``https``;
- the host name is resolved **once**, every address it resolves to is checked, and the
  connection goes to the checked address (the URL is rewritten to the IP; ``Host`` and TLS SNI
  keep the name, so certificates are still verified against it). A DNS answer that changes
  between the check and the connect (rebinding) therefore cannot reach another address;
- refused: any address that is not globally routable (loopback, link-local, private, shared
  100.64/10, unspecified, documentation, reserved), multicast, and this server's own addresses;
  IPv6 forms that embed an IPv4 address (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``,
  6to4, Teredo, NAT64) are judged by the IPv4 address they carry;
- unless the admin allow-list (a core setting in the database, so that every server sharing it
  applies the same list) names the host, its IP, or a network containing the IP.

A refused connection raises ``OutboundRefused``, an ``httpx.TransportError``, so callers that
already handle unreachable hosts handle refusals the same way. What a caller shows a user about
a response is ``status_summary`` (code and reason phrase); the body is for admins only.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from anyio import to_thread
from sqlalchemy.orm import Session

from conveyor.core.config import Settings
from conveyor.core.db import Database
from conveyor.core.errors import InvalidInput
from conveyor.core.settings_store import get_setting, put_setting

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_LIST_KEY = "outbound.allow"
MAX_ALLOW_ENTRIES = 200
EXCERPT_BYTES = 200
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_COMPAT = ipaddress.IPv6Network("::/96")


class OutboundRefused(httpx.TransportError):
    """The policy refused to connect; the message says which rule and how to allow it."""


@dataclass(frozen=True)
class AllowList:
    """Host names, IP addresses and networks an admin allowed despite the address rules."""

    entries: tuple[str, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        clean: list[str] = []
        names: set[str] = set()
        nets: list[IPNetwork] = []
        for raw in entries:
            entry = str(raw).strip().lower()
            try:
                nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if not _HOST_NAME.match(entry):
                    raise InvalidInput(f"'{raw}' is neither a host name, an IP address nor a network",
                                       rule="outbound.allow-entry") from None
                names.add(entry.rstrip("."))
            if entry not in clean:
                clean.append(entry)
        if len(clean) > MAX_ALLOW_ENTRIES:
            raise InvalidInput(f"at most {MAX_ALLOW_ENTRIES} allow-list entries", rule="outbound.allow-entry")
        return cls(tuple(clean), frozenset(names), tuple(nets))

    def names_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def contains(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)


def load_allow_list(session: Session) -> AllowList:
    return AllowList.parse(get_setting(session, ALLOW_LIST_KEY, []) or [])


def save_allow_list(session: Session, entries: Iterable[str], actor: str) -> AllowList:
    allow = AllowList.parse(entries)
    put_setting(session, ALLOW_LIST_KEY, list(allow.entries), actor)
    return allow


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in n for n in _NAT64) or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why the address rules refuse ``ip`` (None: a public address)."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = refusal(inner)
        return f"{why} (embedded in {ip})" if why else None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if not ip.is_global:
        return "a private or reserved address"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        return [literal]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
    out: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


def own_addresses(settings: Settings) -> frozenset[IPAddress]:
    """This server's own addresses: the listen address, the public URL's host, the host name's."""
    hosts = {settings.host, httpx.URL(settings.base_url).host, socket.gethostname()}
    found: set[IPAddress] = set()
    for h in hosts:
        if not h:
            continue
        try:
            found.update(_resolve(h, 0))
        except httpx.ConnectError:
            continue
    return frozenset(found)


class Policy:
    """Decides, per connection, which address may be used; ``allow`` is read at every check."""

    def __init__(self, allow: Callable[[], AllowList], own: frozenset[IPAddress] = frozenset()) -> None:
        self._allow = allow
        self._own = own

    @classmethod
    def for_database(cls, db: Database, settings: Settings) -> Policy:
        def allow() -> AllowList:
            with db.reads() as s:  # at every connection: a lookup that never waits for writers
                return load_allow_list(s)

        return cls(allow, own_addresses(settings))

    @classmethod
    def for_session(cls, session: Session, settings: Settings) -> Policy:
        """For checks inside a request's unit of work (no second transaction on SQLite)."""
        return cls(lambda: load_allow_list(session), own_addresses(settings))

    def check_scheme(self, url: httpx.URL) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise OutboundRefused(f"only http(s) URLs are fetched, not '{url.scheme}:' (rule outbound.scheme)")

    def pin(self, url: httpx.URL) -> IPAddress:
        """The one address to connect to for ``url``, or OutboundRefused."""
        self.check_scheme(url)
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = _resolve(host, port)
        if not addresses:
            raise httpx.ConnectError(f"{host} has no address")
        allow = self._allow()
        if allow.names_host(host):
            return addresses[0]
        for ip in addresses:
            if allow.contains(ip):
                continue
            why = refusal(ip) or ("this server's own address" if ip in self._own else None)
            if why:
                raise OutboundRefused(
                    f"{host} resolves to {ip}, {why}; an admin can allow it with "
                    f"`conveyor settings outbound allow {host}` (rule outbound.address)")
        return addresses[0]

    def check_url(self, url: str) -> None:
        """For the API: refuse a URL at the time it is configured (a 400 naming the rule)."""
        try:
            self.pin(httpx.URL(url))
        except OutboundRefused as exc:
            raise InvalidInput(str(exc), rule="outbound.address") from None
        except (httpx.HTTPError, httpx.InvalidURL):
            return  # not resolvable now: judged again at every connection


def _pinned(request: httpx.Request, ip: IPAddress) -> None:
    host = request.url.host
    request.url = request.url.copy_with(host=str(ip))
    if request.url.scheme == "https":
        request.extensions = {**request.extensions, "sni_hostname": host}


class OutboundTransport(httpx.BaseTransport):
    """An httpx transport that asks the policy before every connection (redirect hops too).

    One connection pool per host name: a pooled TLS connection to an address must never be
    reused for another name that resolves to the same address.
    """

    def __init__(self, policy: Policy, **transport_args: Any) -> None:
        self.policy = policy
        self._args = transport_args
        self._pools: dict[str, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = f"{request.url.scheme}://{request.url.host}"
        _pinned(request, self.policy.pin(request.url))
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.HTTPTransport(**self._args)
        return pool.handle_request(request)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


class AsyncOutboundTransport(httpx.AsyncBaseTransport):
    """The asynchronous twin of ``OutboundTransport`` (name resolution runs in a worker thread)."""

    def __init__(self, policy: Policy, **transport_args: Any) -> None:
        self.policy = policy
        self._args = transport_args
        self._pools: dict[str, httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = f"{request.url.scheme}://{request.url.host}"
        ip = await to_thread.run_sync(self.policy.pin, request.url)
        _pinned(request, ip)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.AsyncHTTPTransport(**self._args)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


def status_summary(status: int) -> str:
    """What any user may see of a response: its code and reason phrase, never the body."""
    phrase = httpx.codes.get_reason_phrase(status)
    return f"HTTP {status} {phrase}".rstrip()


def body_excerpt(content: bytes) -> str:
    """The first bytes of a response body, for admins' eyes only (delivery log, upstream errors)."""
    return content[:EXCERPT_BYTES].decode("utf-8", errors="replace")

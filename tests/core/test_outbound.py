"""The outbound policy (core/outbound.py) against real local HTTP servers on loopback."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from conveyor.core.errors import InvalidInput
from conveyor.core.outbound import AllowList, OutboundRefused, OutboundTransport, Policy, refusal


class Site:
    """A local HTTP server on ``address``; ``/redirect?to=URL`` answers 302 to URL."""

    def __init__(self, address: str) -> None:
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits.append(self.path)
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = f"host={self.headers['Host']}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    a, b = Site("127.0.0.1"), Site("127.0.0.2")
    yield a, b
    a.httpd.shutdown()
    b.httpd.shutdown()


def client(*allowed: str) -> httpx.Client:
    policy = Policy(lambda: AllowList.parse(allowed))
    return httpx.Client(transport=OutboundTransport(policy), follow_redirects=True, timeout=5)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
    "fe80::1", "fc00::1", "0.0.0.0", "::", "224.0.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1",
    "2002:7f00:1::", "64:ff9b::a00:1", "2001:db8::1", "192.0.2.1", "255.255.255.255",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_loopback_is_refused_without_the_allow_list(sites: tuple[Site, Site]) -> None:
    a, _ = sites
    with client() as c, pytest.raises(OutboundRefused, match="loopback"):
        c.get(a.url + "/")
    with client() as c, pytest.raises(OutboundRefused, match="loopback"):
        c.get(a.url.replace("127.0.0.1", "localhost") + "/")
    assert a.hits == []


def test_allow_list_by_address_name_or_network(sites: tuple[Site, Site]) -> None:
    a, b = sites
    with client("127.0.0.1") as c:
        r = c.get(a.url + "/")
        assert r.status_code == 200
        # Host keeps the name the URL had, although the connection went to the checked address.
        assert r.text == f"host=127.0.0.1:{a.httpd.server_address[1]}"
    with client("localhost") as c:
        r = c.get(a.url.replace("127.0.0.1", "localhost") + "/")
        assert r.text == f"host=localhost:{a.httpd.server_address[1]}"
    with client("127.0.0.0/8") as c:
        assert c.get(b.url + "/").status_code == 200


def test_redirects_are_checked_again(sites: tuple[Site, Site]) -> None:
    a, b = sites
    with client("127.0.0.1") as c, pytest.raises(OutboundRefused, match="127.0.0.2"):
        c.get(f"{a.url}/redirect?to={b.url}/secret")
    assert a.hits and b.hits == []
    with client("127.0.0.1") as c, pytest.raises(OutboundRefused, match="outbound.scheme"):
        c.get(f"{a.url}/redirect?to=file:///etc/passwd")


def test_the_name_is_resolved_once_and_the_checked_address_is_used(
    sites: tuple[Site, Site], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the first answer is checked, a second lookup would answer 127.0.0.2.
    Only one lookup happens, and the connection goes to the first address."""
    a, b = sites
    answers = ["127.0.0.1", "127.0.0.2"]
    calls: list[str] = []
    real = socket.getaddrinfo

    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)  # the IP literal the connection is pinned to
        ip = answers[min(len(calls), 1)]
        calls.append(ip)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with client("127.0.0.1") as c:
        r = c.get(f"http://rebind.example:{a.httpd.server_address[1]}/")
    assert r.status_code == 200 and calls == ["127.0.0.1"] and a.hits == ["/"] and b.hits == []


def test_every_address_of_a_name_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    def two_answers(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    with pytest.raises(OutboundRefused, match="10.0.0.5"):
        Policy(lambda: AllowList()).pin(httpx.URL("http://mixed.example/"))


def test_own_address_is_refused() -> None:
    own = frozenset({ipaddress.ip_address("8.8.4.4")})
    with pytest.raises(OutboundRefused, match="own address"):
        Policy(lambda: AllowList(), own).pin(httpx.URL("http://8.8.4.4/"))


def test_bad_allow_list_entries_are_refused() -> None:
    for bad in ("http://x/", "a b", "-x", "x" * 300):
        with pytest.raises(InvalidInput):
            AllowList.parse([bad])


def test_the_allow_list_is_an_admin_setting_with_api_and_cli(server: Any) -> None:
    olga = server.create_user(f"olga-{id(server) % 100000}-{threading.get_ident() % 1000}", "cluster-admin")
    r = server.api(olga).put("/api/v1/settings/outbound", json={"allow": ["10.0.0.0/8"]})
    assert r.status_code == 403
    assert server.api(olga).get("/api/v1/settings/outbound").status_code == 403
    bad = server.api().put("/api/v1/settings/outbound", json={"allow": ["http://x/"]})
    assert bad.status_code == 400 and bad.json()["rule"] == "outbound.allow-entry"
    try:
        out = server.cli("settings", "outbound", "allow", "registry.internal", "10.0.0.0/8").stdout
        assert "registry.internal" in out and "10.0.0.0/8" in out and "127.0.0.1" in out
        server.cli("settings", "outbound", "remove", "10.0.0.0/8")
        shown = server.cli("settings", "outbound", "show").stdout.split()
        assert shown == ["127.0.0.1", "registry.internal"]
    finally:
        server.allow_outbound("127.0.0.1")

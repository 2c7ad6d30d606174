"""Property-based fuzzing of /v2 with hypothesis: whatever arrives, no 5xx, and every error
body is in the spec's format with one of its codes."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.registry.helpers import make_image, sha256
from tests.support.bad_input import deep_json
from tests.support.server import ServerHandle

SPEC_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED",
    "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
}
KNOWN = make_image(layers=1)

names = st.one_of(
    st.sampled_from(["fuzz/app", "fuzz/other", "a", "a/b/c", "x__y", "a-b.c_d", "fuzz/a%00b"]),
    st.text(alphabet="abcXYZ019._-/:@%", min_size=1, max_size=40),
)
digests = st.one_of(
    st.sampled_from([KNOWN.digest, sha256(KNOWN.config), sha256(b""), "sha512:" + "a" * 128, "sha256:xyz",
                     "md5:abcd", "sha256:" + "A" * 64, ""]),
    st.text(alphabet="sha256:0123456789abcdefg", max_size=80),
)
printable = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#")
refs = st.one_of(digests, st.sampled_from(["latest", "v1", "-bad", "a" * 200, "v1%00", "sha256:%00"]),
                 st.text(printable, max_size=20))


def _config(size: str = "2") -> bytes:
    return (b'{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "' + sha256(b"{}").encode()
            + b'", "size": ' + size.encode() + b"}")


# Issue 13: each of these gave a 500 before (json's recursion, the database's refusal of NUL,
# lone surrogates and integers beyond 64 bits).
HOSTILE_MANIFESTS = [
    deep_json(100_000).encode(),
    b'{"schemaVersion": 2, "annotations": {"a": ' + deep_json(5_000).encode() + b"}}",
    b'{"schemaVersion": 2, "config": ' + _config() + b', "layers": [], "annotations": {"a": "\\ud800"}}',
    b'{"schemaVersion": 2, "config": ' + _config() + b', "layers": [], "annotations": {"\\udfff": "x"}}',
    b'{"schemaVersion": 2, "config": ' + _config() + b', "layers": [], "annotations": {"a": "\\u0000"}}',
    b'{"schemaVersion": 2, "config": ' + _config("1" + "0" * 30) + b', "layers": []}',
    b'{"schemaVersion": 2, "config": ' + _config("-" + "9" * 25) + b', "layers": []}',
    b'{"schemaVersion": 2, "config": ' + _config() + b', "layers": [], "annotations": {"a": "caf\xe9"}}',
]
manifest_bodies = st.one_of(
    st.just(KNOWN.manifest),
    st.binary(max_size=300),
    st.sampled_from(HOSTILE_MANIFESTS),
    st.integers(60, 3000).map(lambda n: deep_json(n).encode()),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
        lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(
            st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests", "subject", "digest",
                             "size", "artifactType", "annotations", "urls"]), children, max_size=6)),
        max_leaves=20,
    ).map(lambda doc: json.dumps(doc).encode()),
)
content_types = st.sampled_from([
    None, "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json", "application/octet-stream", "text/plain; x=y",
])
ranges = st.one_of(st.none(), st.text(alphabet="bytes=0123456789-, ", max_size=25).map(str.strip))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], dict[str, str], bytes]:
    name = draw(names)
    kind = draw(st.sampled_from(["manifest", "blob", "upload", "upload-id", "tags", "referrers", "raw"]))
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    body = b""
    if kind == "manifest":
        method = draw(st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "PATCH"]))
        path = f"/v2/{name}/manifests/{draw(refs)}"
        if method == "PUT":
            body = draw(manifest_bodies)
            ct = draw(content_types)
            if ct:
                headers["Content-Type"] = ct
    elif kind == "blob":
        method = draw(st.sampled_from(["GET", "HEAD", "DELETE", "PUT"]))
        path = f"/v2/{name}/blobs/{draw(digests)}"
        r = draw(ranges)
        if r is not None:
            headers["Range"] = r
    elif kind == "upload":
        method = draw(st.sampled_from(["POST", "GET"]))
        path = f"/v2/{name}/blobs/uploads/"
        for key in draw(st.sets(st.sampled_from(["digest", "mount", "from"]))):
            params[key] = draw(st.one_of(digests, names))
        body = draw(st.binary(max_size=200))
    elif kind == "upload-id":
        method = draw(st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]))
        path = f"/v2/{name}/blobs/uploads/{draw(st.text(alphabet='0123456789abcdef-', max_size=40))}"
        body = draw(st.binary(max_size=200))
        cr = draw(ranges)
        if cr is not None:
            headers["Content-Range"] = cr
        if draw(st.booleans()):
            params["digest"] = draw(digests)
    elif kind == "tags":
        method = "GET"
        path = f"/v2/{name}/tags/list"
        if draw(st.booleans()):
            params["n"] = draw(st.one_of(st.text(alphabet="-0123456789x", max_size=6),
                                         st.sampled_from([str(2**64), "9" * 40, "-" + "9" * 30])))
        if draw(st.booleans()):
            params["last"] = draw(st.text(printable, max_size=10))
    elif kind == "referrers":
        method = "GET"
        path = f"/v2/{name}/referrers/{draw(digests)}"
        if draw(st.booleans()):
            params["artifactType"] = draw(st.text(printable, max_size=30))
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]))
        path = "/v2/" + draw(st.text(alphabet="abc/._-:@%0123456789", max_size=60))
    return method, path, params, headers, body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=requests())
def test_no_request_makes_the_registry_fail(server: ServerHandle, req: tuple[str, str, dict[str, str],
                                                                              dict[str, str], bytes]) -> None:
    method, path, params, headers, body = req
    with httpx.Client(base_url=server.url, auth=("admin", server.admin_token), timeout=60) as c:
        if not getattr(test_no_request_makes_the_registry_fail, "seeded", False):
            for b in KNOWN.blobs:
                c.post("/v2/fuzz/app/blobs/uploads/", params={"digest": sha256(b)}, content=b)
            c.put("/v2/fuzz/app/manifests/v1", content=KNOWN.manifest,
                  headers={"Content-Type": KNOWN.media_type})
            test_no_request_makes_the_registry_fail.seeded = True  # type: ignore[attr-defined]
        r = c.request(method, path, params=params, headers=headers, content=body or None)
    assert r.status_code < 500, f"{method} {path} {params} {headers} -> {r.status_code} {r.text[:300]}"
    sent = r.request.url.path  # after the client normalised it ("/v2/../x" is "/x", not the registry)
    if r.status_code >= 400 and method != "HEAD" and r.content and (sent == "/v2" or sent.startswith("/v2/")):
        doc = r.json()
        codes = {e["code"] for e in doc["errors"]}
        assert codes <= SPEC_CODES, codes


def test_hostile_manifests_and_names_are_refused_as_the_spec_says(server: ServerHandle) -> None:
    with httpx.Client(base_url=server.url, auth=("admin", server.admin_token), timeout=60) as c:
        for body in HOSTILE_MANIFESTS:
            r = c.put("/v2/fuzz/hostile/manifests/v1", content=body,
                      headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            assert r.status_code == 400, (body[:80], r.status_code, r.text[:300])
            assert [e["code"] for e in r.json()["errors"]] == ["MANIFEST_INVALID"], r.text[:300]
        for path in ("/v2/fuzz/a%00b/manifests/v1", "/v2/fuzz/app/manifests/v1%00", "/v2/fuzz/app/blobs/sha256:%00",
                     "/v2/fuzz/app/tags/list?n=" + "9" * 40, "/v2/fuzz/app/tags/list?n=" + str(2**63)):
            r = c.get(path)
            assert r.status_code < 500, (path, r.status_code, r.text[:300])
            if r.status_code >= 400:  # a huge ?n= may be clamped and answered, which is fine too
                assert {e["code"] for e in r.json()["errors"]} <= SPEC_CODES

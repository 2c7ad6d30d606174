"""The request guard (core/limits.py) checks JSON and form bodies; binary uploads (a runner's
artifacts, declared application/octet-stream) stream on to their route, which has its own limit.
Before, the guard parsed such a body as JSON and refused every CI run's artifact upload."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from conveyor.core.http import problem_response
from conveyor.core.limits import MAX_BODY_BYTES, RequestGuard


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestGuard, problem=problem_response)

    @app.put("/upload")
    async def upload(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size": size}

    return app


def test_binary_uploads_pass_and_json_is_still_checked() -> None:
    client = TestClient(_app())
    blob = bytes(range(256)) * (3 * MAX_BODY_BYTES // 256)  # not UTF-8, larger than any JSON body may be
    r = client.put("/upload", content=blob, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and r.json() == {"size": len(blob)}, r.text
    r = client.put("/upload", content=b"\xff\xfe", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["rule"] == "request.encoding"
    r = client.put("/upload", content=b"\xff\xfe")  # undeclared: read as JSON, as FastAPI would
    assert r.status_code == 400 and r.json()["rule"] == "request.encoding"

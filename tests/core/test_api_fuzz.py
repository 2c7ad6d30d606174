"""The REST API fuzzed from its own OpenAPI document with schemathesis, against running servers on
SQLite and PostgreSQL: whatever schemathesis generates, valid and invalid by the schema, the
server never answers 5xx. (Its pytest plugin does not run under this pytest, so the operations'
hypothesis strategies are driven directly.)"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.server import ServerHandle

pytestmark = pytest.mark.slow

# The log stream follows a run until it ends: its response ends only when the run does.
STREAMS = re.compile(r"/logs/stream$")
EXAMPLES = 25


def _fuzz(server: ServerHandle, operation: Any, mode: GenerationMode, failures: list[str]) -> None:
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    session = requests.Session()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        try:
            response = case.call(base_url=server.url, session=session, headers=auth, timeout=60)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError):
            return  # not sendable at all (a control character in the path or a header)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} query={case.query} body={str(case.body)[:150]} "
                            f"-> {response.status_code} {response.text[:200]}")

    with contextlib.suppress(Unsatisfiable):  # nothing invalid to generate (no parameters, no body)
        run()


# The operations are fuzzed in shards, every operation in exactly one: one test of all ~200 took 445 s
# (SQLite) and 584 s (PostgreSQL) in the test command, next to the 600 s guard against hangs; each
# new route adds its examples, so the shards keep every test well under it without fewer examples.
SHARDS = 3


@pytest.mark.parametrize("shard", range(SHARDS))
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_no_input_makes_the_api_fail(backend: str, shard: int, server_factory: Callable[..., ServerHandle]) -> None:
    server = server_factory(backend)
    assert server.api().post("/api/v1/repos", json={"name": "fuzz"}).status_code == 201
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json",
                                           headers={"Authorization": f"Bearer {server.admin_token}"})
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if not STREAMS.search(op.path)]
    assert len(operations) > 50
    mine = operations[shard::SHARDS]  # the document's order is the routes' order: stable across runs
    for operation in mine:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(server, operation, mode, failures)
    assert len(mine) > 50 // SHARDS
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:30])

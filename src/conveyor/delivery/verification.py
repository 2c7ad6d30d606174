"""Judging an endpoint's answer against the environment's ``verify`` settings: the status, an
expected text, and (``dependency``) that a service the app depends on answered it.

Why the dependency is read from the app's own answer: the app calls it the way it does for its
users (by the Service's DNS name, from inside the cluster), so "hello reports the counter ok" checks
the DNS name, the counter's Service and pods, and the app's configuration in one request; probing the
counter's Service from here would check none of that.
"""

from __future__ import annotations

import json

from conveyor.delivery.environments import Verify
from conveyor.delivery.ports import Probe


def judge(v: Verify, result: Probe) -> tuple[bool, str]:
    """(passed, why): the reason names the rule that failed and what the endpoint said."""
    if result.error:
        return False, result.error
    if result.status != v.expect_status:
        return False, f"GET {v.path} answered {result.status}, expected {v.expect_status}: {result.body[:200]}"
    if v.expect_body is not None and v.expect_body not in result.body:
        return False, f"GET {v.path} body lacks {v.expect_body!r}: {result.body[:200]}"
    answered = f"GET {v.path} answered {result.status}"
    if v.dependency is None:
        return True, answered
    problem = dependency_problem(result.body, v.dependency)
    if problem is not None:
        return False, f"{answered}, but {problem}"
    return True, f"{answered}; its dependency '{v.dependency}' answered"


def dependency_problem(body: str, field: str) -> str | None:
    """Why the answer does not show ``field`` ok (None when it does)."""
    try:
        data = json.loads(body)
    except ValueError:
        return f"the answer is not JSON (dependency '{field}' expected in it): {body[:120]}"
    report = data.get(field) if isinstance(data, dict) else None
    if not isinstance(report, dict):
        return f"the answer does not report its dependency '{field}': {body[:200]}"
    if report.get("ok") is not True:
        why = report.get("error") or "no reason given"
        at = f" at {report['url']}" if report.get("url") else ""
        return f"its dependency '{field}' did not answer{at}: {why}"
    return None

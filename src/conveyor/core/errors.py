"""Errors as RFC 9457 problem details: every refusal names the rule that refused it."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, rule: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.rule = rule
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.rule:
            body["rule"] = self.rule
        body.update(self.extra)
        return body


class InvalidInput(ConveyorError):
    status = 400
    title = "Invalid input"


class Unauthorized(ConveyorError):
    status = 401
    title = "Authentication required"


class Forbidden(ConveyorError):
    status = 403
    title = "Forbidden"


class NotFound(ConveyorError):
    status = 404
    title = "Not found"


class Conflict(ConveyorError):
    status = 409
    title = "Conflict"


class Unprocessable(ConveyorError):
    status = 422
    title = "Refused by a rule"

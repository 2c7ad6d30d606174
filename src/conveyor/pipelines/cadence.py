"""CI at a cadence: instead of one run per merge, collect merges and build the tip.

``trigger: batch`` with ``batch: {window: 10m}`` starts one run once the window has passed since the
first merge not yet built; ``schedule: {cron: "0 * * * *", timezone: Europe/Berlin}`` starts one at
each cron time when something new was merged (a scheduled time with nothing new does nothing).
Either run lists every commit it includes, so lead time still counts from each commit.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


def check_cron(expression: str, timezone: str) -> str | None:
    """A message naming what is wrong with a schedule, or None."""
    if len(expression.split()) != 5:
        return f"schedule cron '{expression}' must have 5 fields (minute hour day month weekday)"
    if not croniter.is_valid(expression):
        return f"schedule cron '{expression}' is not a valid cron expression"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone '{timezone}' (use an IANA name such as Europe/Berlin)"
    return None


def previous_fire(expression: str, timezone: str, now: datetime) -> datetime:
    """The latest cron time at or before ``now`` (aware datetimes)."""
    it = croniter(expression, now.astimezone(ZoneInfo(timezone)))
    fire: datetime = it.get_prev(datetime)
    return fire


def next_fire(expression: str, timezone: str, after: datetime) -> datetime:
    it = croniter(expression, after.astimezone(ZoneInfo(timezone)))
    fire: datetime = it.get_next(datetime)
    return fire

"""Budget periods: calendar days, weeks and months in the workspace's time zone, or all time.

A period is a half-open span of UTC instants ``[start, end)``. Boundaries are local midnights
worked out on the local calendar (never by adding 24 hours), so a day that has 23 or 25 hours
around a daylight-saving change is still exactly one day. Weeks start on Monday (ISO 8601).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

PERIODS = ("daily", "weekly", "monthly", "total")
PERIOD_LABELS = {"daily": "Daily", "weekly": "Weekly", "monthly": "Monthly", "total": "All time"}
# The start of the "total" period: before any ledger row, so every row falls in it.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Period:
    start: datetime  # UTC
    end: datetime | None  # UTC, exclusive; None for "total"

    def contains(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local calendar day, in UTC."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def first_day(period: str, day: date) -> date:
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"no calendar start for period {period!r}")


def next_first_day(period: str, start: date) -> date:
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    if period == "monthly":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    raise ValueError(f"no calendar end for period {period!r}")


def period_at(period: str, tz: str, at: datetime) -> Period:
    """The period of a budget that contains the instant ``at``."""
    if period == "total":
        return Period(EPOCH, None)
    zone = ZoneInfo(tz)
    start = first_day(period, at.astimezone(zone).date())
    return Period(local_midnight(start, zone), local_midnight(next_first_day(period, start), zone))

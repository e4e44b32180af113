"""Calendar periods in a workspace's timezone, as UTC bounds, and the zone's UTC offsets over them.

"Last 7 days" is today and the six local days before it, "month to date" starts at local
midnight on the 1st. ``period`` turns a period's name into UTC bounds, with the previous period
of the same length to compare against; when a period is still running, the previous one is cut
at the same point, so the comparison is like for like. ``offset_changes`` gives the exact
instants a zone's offset changes (DST), for bucketing UTC instants by local day or hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

PERIODS: dict[str, str] = {
    "today": "Today",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "month": "Month to date",
    "quarter": "Quarter to date",
    "custom": "Custom dates",
}


@dataclass(frozen=True)
class Period:
    """A calendar period in ``tz`` as UTC bounds ``[start, end)``, and the previous one to compare with."""

    key: str
    tz: str
    first: date  # local dates, inclusive
    last: date
    start: datetime  # aware, UTC
    end: datetime  # now, for a period still running
    previous_start: datetime
    previous_end: datetime

    @property
    def grain(self) -> Literal["hour", "day"]:
        return "hour" if self.first == self.last else "day"

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def previous_first(self) -> date:
        return self.previous_start.astimezone(ZoneInfo(self.tz)).date()

    def describe(self) -> str:
        if self.first == self.last:
            return self.first.strftime("%d %B %Y").lstrip("0")
        return f"{self.first:%d %b %Y} – {self.last:%d %b %Y}".replace(" 0", " ").lstrip("0")


def local_midnight(day: date, tz: str) -> datetime:
    """The UTC instant a local day begins (where midnight is skipped by DST, the moment the day starts)."""
    return datetime.combine(day, time(), tzinfo=ZoneInfo(tz)).astimezone(UTC)


def period(key: str, tz: str, now: datetime, first: date | None = None, last: date | None = None) -> Period:
    """Resolve a period name (a key of ``PERIODS``) at ``now``; ``first``/``last`` are the custom dates."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    if key == "today":
        first = last = today
        previous_first = today - timedelta(days=1)
    elif key in ("7d", "30d"):
        n = int(key[:-1])
        first, last = today - timedelta(days=n - 1), today
        previous_first = first - timedelta(days=n)
    elif key == "month":
        first = today.replace(day=1)
        last = _next_month(first) - timedelta(days=1)
        previous_first = (first - timedelta(days=1)).replace(day=1)
    elif key == "quarter":
        first = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        last = _next_month(_next_month(_next_month(first))) - timedelta(days=1)
        previous_first = _months_before(first, 3)
    elif key == "custom":
        if first is None or last is None:
            raise ValueError("Choose both a first and a last day for a custom period.")
        if first > last:
            raise ValueError("The first day of the period must not be after its last day.")
        previous_first = first - timedelta(days=(last - first).days + 1)
    else:
        raise ValueError(f"Unknown period {key!r}; choose one of {', '.join(PERIODS)}.")
    start = local_midnight(first, tz)
    end = min(local_midnight(last + timedelta(days=1), tz), max(now.astimezone(UTC), start))
    previous_start = local_midnight(previous_first, tz)
    # Cut the previous period at the same wall-clock point, so that "today until 10:00" meets
    # "yesterday until 10:00" whatever DST did in between.
    elapsed = _wall(end, zone) - _wall(start, zone)
    cut = (datetime.combine(previous_first, time()) + elapsed).replace(tzinfo=zone).astimezone(UTC)
    return Period(key, tz, first, last, start, end, previous_start, min(cut, start))


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def _months_before(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def offset_changes(tz: str, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """``tz``'s UTC offset over ``[start, end)``: (from this instant, offset in seconds) pairs."""
    zone = ZoneInfo(tz)

    def offset(t: datetime) -> int:
        return int(t.astimezone(zone).utcoffset().total_seconds())

    changes = [(start, offset(start))]
    t, day = start, timedelta(days=1)
    while t < end:  # zones change offset at most once a day; find the exact second by bisection
        step_end = min(t + day, end)
        if offset(step_end) != changes[-1][1]:
            lo, hi = int(t.timestamp()), int(step_end.timestamp())
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset(datetime.fromtimestamp(mid, UTC)) == changes[-1][1]:
                    lo = mid
                else:
                    hi = mid
            at = datetime.fromtimestamp(hi, UTC)
            changes.append((at, offset(at)))
        t = step_end
    return changes

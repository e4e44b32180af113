"""Cron expressions as people write them, turned into APScheduler 3 triggers that fire as cron would.

Two things APScheduler 3's own ``CronTrigger.from_crontab`` gets wrong for us, fixed here:

- **Day of week.** Cron counts 0 (or 7) as Sunday; APScheduler 3 counts 0 as Monday, so
  ``0 9 * * 1`` would fire on Tuesdays (apscheduler#286, kept for compatibility in 3.x). The
  field is expanded here and handed over as day names, which both agree on.
- **The repeated hour.** When clocks go back, a wall-clock time such as 02:30 happens twice;
  APScheduler fires at both. Cron fires a job at a fixed hour once, so the second is skipped
  unless the hour field is a wildcard (an hourly job really should run in both hours). In the
  hour that does not exist when clocks go forward, APScheduler fires once, at the same UTC
  time as the hour before the change; cron does the same.

Five fields (minute hour day month weekday), six with a leading seconds field, or a macro
(``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``). A day of the month and a
day of the week together are refused: cron's rule for that ("either") is rarely what is meant
and APScheduler's ("both") differs from it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from engine.errors import InvalidInput

MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron's numbering: 0 is Sunday
FIELDS = ("second", "minute", "hour", "day", "month", "day_of_week")
_DAY_TOKEN = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")

EXAMPLES = ("0 9 * * 1-5 (9:00 on weekdays)", "*/15 * * * * (every 15 minutes)", "@daily")


class CronSchedule(CronTrigger):
    """A ``CronTrigger`` that is right on the nights the clocks change (see the module's docstring)."""

    def __init__(self, expression: str, tz: ZoneInfo, fields: dict[str, str]):
        super().__init__(timezone=tz, **fields)
        self.expression = expression
        self._hour_is_wildcard = fields["hour"].startswith("*")
        self._step = timedelta(seconds=1 if fields["second"] != "0" else 60)

    def get_next_fire_time(self, previous_fire_time, now):
        floor = now.astimezone(UTC)
        if previous_fire_time is not None:
            floor = min(floor, previous_fire_time.astimezone(UTC) + timedelta(microseconds=1))
        nxt = super().get_next_fire_time(previous_fire_time, now)
        if nxt is not None:
            nxt = self._across_change(floor, nxt)
        while nxt is not None and not self._hour_is_wildcard and _is_repeat(nxt):
            nxt = self.get_next_fire_time(nxt, nxt)
        return nxt

    def _across_change(self, floor: datetime, nxt: datetime) -> datetime | None:
        """APScheduler 3 reckons in wall-clock time and loses track in the hour that repeats: it
        can skip it, or answer a time before ``floor`` over and over. When the offset changes
        between ``floor`` and its answer (or the answer is too early), the hours around the
        change are checked second by second (minute by minute for five-field expressions)."""
        tz, answer = self.timezone, nxt.astimezone(UTC)
        if answer < floor:
            found = self._scan(floor, floor + timedelta(hours=2))
            return found or super().get_next_fire_time(None, (floor + timedelta(hours=2)).astimezone(tz))
        if floor.astimezone(tz).utcoffset() == nxt.utcoffset():
            return nxt
        lo, hi = floor, answer
        while hi - lo > timedelta(seconds=1):  # the change itself, by bisection
            mid = lo + (hi - lo) / 2
            lo, hi = (mid, hi) if mid.astimezone(tz).utcoffset() == floor.astimezone(tz).utcoffset() else (lo, mid)
        return self._scan(max(floor, hi - timedelta(hours=2)), min(answer, hi + timedelta(hours=2))) or nxt

    def _scan(self, start: datetime, stop: datetime) -> datetime | None:
        step = self._step.seconds
        moment = start.replace(microsecond=0)
        if moment < start:
            moment += timedelta(seconds=1)
        if moment.second % step:
            moment += timedelta(seconds=step - moment.second % step)
        while moment <= stop:
            local = moment.astimezone(self.timezone)
            if self._matches(local):
                return local
            moment += self._step
        return None

    def _matches(self, local: datetime) -> bool:
        return all(field.get_next_value(local) == field.get_value(local) for field in self.fields)

    def __str__(self) -> str:
        return f"cron[{self.expression!r}, {self.timezone}]"


def _is_repeat(moment: datetime) -> bool:
    """True for the second occurrence of a wall-clock time in the hour that repeats."""
    first = moment.replace(tzinfo=None).replace(tzinfo=moment.tzinfo, fold=0)
    return first.astimezone(UTC) != moment.astimezone(UTC)


def zone(name: str) -> ZoneInfo:
    name = (name or "").strip()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{name!r} is not a timezone. Use a name from the IANA list, like Europe/Paris, "
                           "America/New_York or UTC.") from None


def _weekday(token: str) -> int:
    if token.isdigit():
        day = int(token)
        if day > 7:
            raise ValueError(token)
        return day % 7
    if token[:3] not in DAYS:
        raise ValueError(token)
    return DAYS.index(token[:3])


def _weekdays(field: str) -> str:
    """Cron's weekday field as APScheduler day names (``*`` when it means every day)."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        match = _DAY_TOKEN.match(part)
        if not match:
            raise ValueError(part)
        span, step = match.group(1), int(match.group(2) or 1)
        if step < 1:
            raise ValueError(part)
        if span == "*":
            lo, hi = 0, 6
        elif "-" in span:
            a, b = span.split("-")
            lo, hi = _weekday(a), _weekday(b)
            if hi == 0 and lo > 0:
                hi = 7  # "5-7", "fri-sun": up to the Sunday that ends the week
            if hi < lo:
                raise ValueError(part)
        else:
            lo = hi = _weekday(span)
        days.update(d % 7 for d in range(lo, hi + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(DAYS[d] for d in sorted(days))


def fields_of(expression: str) -> dict[str, str]:
    """The trigger's fields for ``expression``; ``InvalidInput`` saying what is wrong."""
    text = " ".join((expression or "").split())
    text = MACROS.get(text.lower(), text)
    parts = text.split(" ") if text else []
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise InvalidInput(f"{expression!r} is not a cron expression: it needs five fields (minute hour day "
                           f"month weekday), or six with seconds first. For example: {'; '.join(EXAMPLES)}.")
    fields = dict(zip(FIELDS, parts))
    if fields["day"] not in ("*", "?") and fields["day_of_week"] not in ("*", "?"):
        raise InvalidInput("Give a day of the month or a day of the week, not both: cron runs such a schedule "
                           "on either day, which is rarely what is meant. Use two schedules instead.")
    try:
        fields["day_of_week"] = _weekdays(fields["day_of_week"])
    except ValueError:
        raise InvalidInput(f"The weekday field {parts[5]!r} is not valid: use 0–7 (0 and 7 are Sunday), names "
                           "(mon, tue…), ranges (1-5) or lists (1,3,5).") from None
    fields["day"] = "*" if fields["day"] == "?" else fields["day"]
    return fields


def parse(expression: str, timezone_name: str) -> CronSchedule:
    """A trigger for ``expression`` in ``timezone_name``, validated; ``InvalidInput`` otherwise."""
    tz = zone(timezone_name)
    fields = fields_of(expression)
    try:
        return CronSchedule(" ".join((expression or "").split()), tz, fields)
    except ValueError as exc:
        raise InvalidInput(f"{expression!r} is not a cron expression APScheduler accepts: {exc}. For example: "
                           f"{'; '.join(EXAMPLES)}.") from None


def next_times(expression: str, timezone_name: str, after: datetime, n: int = 3) -> list[datetime]:
    """The next ``n`` fire times strictly after ``after``, as aware UTC datetimes."""
    trigger = parse(expression, timezone_name)
    out: list[datetime] = []
    previous, now = None, after + timedelta(microseconds=1)
    while len(out) < n:
        nxt = trigger.get_next_fire_time(previous, now)
        if nxt is None:
            break
        out.append(nxt.astimezone(timezone.utc))
        previous, now = nxt, nxt.astimezone(UTC) + timedelta(microseconds=1)  # not wall-clock +
    return out


def times_between(trigger: CronSchedule, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Fire times in (start, end], at most ``limit`` of them (the earliest), as aware UTC datetimes."""
    out: list[datetime] = []
    previous, now = None, start + timedelta(microseconds=1)
    while len(out) < limit:
        nxt = trigger.get_next_fire_time(previous, now)
        if nxt is None or nxt > end:
            break
        out.append(nxt.astimezone(timezone.utc))
        previous, now = nxt, nxt.astimezone(UTC) + timedelta(microseconds=1)  # not wall-clock +
    return out

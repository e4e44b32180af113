"""Forecasts: where a budget's spend will be at the end of its period, and when it runs out.

The model is small and explainable, built from the budget's own last eight weeks of ledger:

* each weekday has its own level, the mean spend of that weekday (once there are two weeks
  of history; before that every day gets the overall mean), and its own variance;
* each weekday has its own shape through the day (the share of its spend each local hour
  carries), so a daily budget's forecast follows the working day instead of a straight line;
* the rest of today blends the weekday's level with today's own pace, trusting today's pace
  more the further into a typical day it is;
* the band is an 80 % interval from the summed variance of the days still to come.

An all-time budget is forecast over the next 30 days. Nothing is forecast without at least
one complete day of history.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from engine import alerts, spend_series
from engine.budget_periods import local_midnight, period_at
from engine.budget_scope import ledger_rows
from engine.models import Budget

HISTORY_DAYS = 56
WEEKDAY_AWARE_AFTER = 14  # days of history before each weekday gets its own level
TOTAL_HORIZON_DAYS = 30
Z80 = Decimal("1.2816")  # two-sided 80 % interval of a normal distribution
CENT = Decimal("0.000001")
ALL_DAYS = -1  # the pooled "weekday" before there is enough history to tell weekdays apart


@dataclass(frozen=True)
class Point:
    at: datetime
    expected: Decimal  # cumulative spend in the period by ``at``
    low: Decimal
    high: Decimal


@dataclass(frozen=True)
class Forecast:
    now: datetime
    end: datetime  # the end of the period (or of the 30-day horizon of an all-time budget)
    spent: Decimal
    expected: Decimal
    low: Decimal
    high: Decimal
    exhausted_at: datetime | None  # when the expected spend reaches the limit; None: not before ``end``
    path: tuple[Point, ...]
    history_days: int
    weekday_aware: bool


@dataclass(frozen=True)
class Profile:
    """A series' typical day per weekday: level (mean spend), variance, and share of spend per local hour."""

    level: dict[int, Decimal]
    variance: dict[int, Decimal]
    shares: dict[int, list[Decimal]]
    history_days: int
    weekday_aware: bool

    def key(self, day: date) -> int:
        return day.weekday() if self.weekday_aware else ALL_DAYS

    def done_by(self, local: datetime) -> Decimal:
        """The share of a typical day's spend that falls before ``local`` on its day."""
        shares = self.shares[self.key(local.date())]
        minutes = Decimal(local.minute * 60 + local.second) / 3600
        return sum(shares[: local.hour], Decimal(0)) + minutes * shares[local.hour]


def _mean_var(values: list[Decimal]) -> tuple[Decimal, Decimal]:
    mean = sum(values, Decimal(0)) / len(values)
    if len(values) < 2:
        return mean, Decimal(0)
    return mean, sum(((v - mean) ** 2 for v in values), Decimal(0)) / (len(values) - 1)


def profile(history: dict[datetime, Decimal], tz: str, today: date) -> Profile | None:
    """The typical day of a series, from its complete local days before ``today``."""
    zone = ZoneInfo(tz)
    before = local_midnight(today, zone)
    complete = {h: c for h, c in history.items() if h < before}
    days = spend_series.daily(complete, tz)
    if not days:
        return None
    first = min(days)
    span = [first + timedelta(days=i) for i in range((today - first).days)]
    aware = len(span) >= WEEKDAY_AWARE_AFTER
    keys = range(7) if aware else (ALL_DAYS,)
    group = (lambda d: d.weekday()) if aware else (lambda d: ALL_DAYS)
    values: dict[int, list[Decimal]] = defaultdict(list)
    for d in span:
        values[group(d)].append(days.get(d, Decimal(0)))
    pooled_mean, pooled_var = _mean_var([days.get(d, Decimal(0)) for d in span])
    by_hour: dict[int, list[Decimal]] = {k: [Decimal(0)] * 24 for k in keys}
    for at, cost in complete.items():
        local = at.astimezone(zone)
        by_hour[group(local.date())][local.hour] += cost
    level, variance, shares = {}, {}, {}
    for k in keys:
        if len(values[k]) >= 2:
            level[k], variance[k] = _mean_var(values[k])
        else:
            level[k], variance[k] = pooled_mean, pooled_var
        total = sum(by_hour[k], Decimal(0))
        shares[k] = [h / total for h in by_hour[k]] if total else [Decimal(1) / 24] * 24
    return Profile(level, variance, shares, len(span), aware)


def project(history: dict[datetime, Decimal], *, tz: str, now: datetime, end: datetime, spent: Decimal,
            limit: Decimal) -> Forecast | None:
    """Forecast spend from ``now`` to ``end`` on top of ``spent``, from an hourly ``history`` up to now."""
    zone = ZoneInfo(tz)
    local_now = now.astimezone(zone)
    today = local_now.date()
    p = profile(history, tz, today)
    if p is None:
        return None
    midnight = local_midnight(today + timedelta(days=1), zone)
    spent_today = sum((c for h, c in history.items() if h.astimezone(zone).date() == today), Decimal(0))
    level = p.level[p.key(today)]
    done = p.done_by(local_now)
    rest = 1 - done
    # Today's own pace counts for as much of a typical day as is behind us.
    pace = spent_today / done * rest if done > 0 else level * rest
    rest_today = rest * (level * rest) + done * pace
    var_today = p.variance[p.key(today)] * rest

    points = [Point(now, spent, spent, spent)]
    cum, var = spent, Decimal(0)

    def add(at: datetime, amount: Decimal, variance: Decimal) -> None:
        nonlocal cum, var
        cum, var = cum + amount, var + variance
        spread = Z80 * var.sqrt()
        points.append(Point(at, cum, max(spent, cum - spread), cum + spread))

    if end <= midnight:  # a daily budget: follow the rest of the day hour by hour
        at = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        previous = done
        while True:
            stop = min(at, end)
            reached = Decimal(1) if stop >= midnight else p.done_by(stop.astimezone(zone))
            part = (reached - previous) / rest if rest > 0 else Decimal(0)
            add(stop, rest_today * part, var_today * part)
            previous = reached
            if stop >= end:
                break
            at += timedelta(hours=1)
    else:
        add(midnight, rest_today, var_today)
        day = today + timedelta(days=1)
        while local_midnight(day, zone) < end:
            stop = min(local_midnight(day + timedelta(days=1), zone), end)
            add(stop, p.level[p.key(day)], p.variance[p.key(day)])
            day += timedelta(days=1)

    last = points[-1]
    return Forecast(now=now, end=end, spent=spent, expected=last.expected.quantize(CENT),
                    low=last.low.quantize(CENT), high=last.high.quantize(CENT),
                    exhausted_at=_exhausted_at(points, limit), path=tuple(points),
                    history_days=p.history_days, weekday_aware=p.weekday_aware)


def _exhausted_at(points: list[Point], limit: Decimal) -> datetime | None:
    if points[0].expected >= limit:
        return points[0].at
    for a, b in zip(points, points[1:]):
        if b.expected >= limit:
            share = (limit - a.expected) / (b.expected - a.expected)
            return a.at + (b.at - a.at) * float(share)
    return None


# --- for a budget ---------------------------------------------------------------------------


def history_start(tz: str, now: datetime) -> datetime:
    return local_midnight(now.astimezone(ZoneInfo(tz)).date() - timedelta(days=HISTORY_DAYS), ZoneInfo(tz))


def horizon_end(budget: Budget, tz: str, now: datetime) -> datetime:
    period = period_at(budget.period, tz, now)
    if period.end is not None:
        return period.end
    return local_midnight(now.astimezone(ZoneInfo(tz)).date() + timedelta(days=TOTAL_HORIZON_DAYS), ZoneInfo(tz))


def history(session: Session, budget: Budget, tz: str, now: datetime) -> dict[datetime, Decimal]:
    """The budget's hourly spend over the forecast's history window, up to now."""
    where = ledger_rows(budget.scope, budget.scope_id, budget.scope_value, session.get_bind().dialect.name)
    return spend_series.hourly(session, budget.workspace_id, where, history_start(tz, now), now)


def for_budget(session: Session, budget: Budget, tz: str, now: datetime, spent: Decimal,
               hours: dict[datetime, Decimal] | None = None) -> Forecast | None:
    hours = history(session, budget, tz, now) if hours is None else hours
    return project(hours, tz=tz, now=now, end=horizon_end(budget, tz, now), spent=spent, limit=budget.limit_usd)


def alert_for(budget: Budget, tz: str, now: datetime, spent: Decimal, f: Forecast | None) -> dict | None:
    """The forecast alert to fire (``alerts.fire`` arguments) when the forecast passes the limit first, else None."""
    if f is None or spent >= budget.limit_usd or f.expected <= budget.limit_usd:
        return None  # no forecast, nothing to warn of, or the 100 % threshold alert has said it already
    period = period_at(budget.period, tz, now)
    when = f.exhausted_at.astimezone(ZoneInfo(tz)) if f.exhausted_at else None
    by = "the end of the period" if budget.period != "total" else f"{TOTAL_HORIZON_DAYS} days from now"
    return dict(
        workspace_id=budget.workspace_id, budget_id=budget.id, kind="forecast",
        key=f"forecast:{budget.id}:{alerts.period_key(period.start)}",
        title=f"{budget.name}: forecast to pass its limit",
        message=(f"At the usual pace “{budget.name}” will spend about {alerts.usd(f.expected)} by {by} "
                 f"(80% range {alerts.usd(f.low)}–{alerts.usd(f.high)}), over its {alerts.usd(budget.limit_usd)} limit"
                 + (f"; it is expected to run out around {when:%a %d %b %H:%M}." if when else ".")),
        detail={"expected": str(f.expected), "low": str(f.low), "high": str(f.high),
                "limit": str(budget.limit_usd), "spent": str(spent),
                "exhausted_at": f.exhausted_at.isoformat() if f.exhausted_at else None,
                "period_start": period.start.isoformat()},
    )


def actual_curve(hours: dict[datetime, Decimal], *, start: datetime, now: datetime, spent: Decimal,
                 tz: str, hourly_grain: bool) -> list[tuple[datetime, Decimal]]:
    """Cumulative spend from ``start`` to now (by hour or by local day), ending at ``spent``."""
    zone = ZoneInfo(tz)
    inside = sorted((h, c) for h, c in hours.items() if start <= h < now)
    cum = spent - sum((c for _, c in inside), Decimal(0))
    points = [(start, cum)]
    if hourly_grain:
        for h, c in inside:
            cum += c
            points.append((min(h + timedelta(hours=1), now), cum))
    else:
        by_day = spend_series.daily(dict(inside), tz)
        day = start.astimezone(zone).date()
        while local_midnight(day, zone) < now:
            cum += by_day.get(day, Decimal(0))
            points.append((min(local_midnight(day + timedelta(days=1), zone), now), cum))
            day += timedelta(days=1)
    if points[-1][0] < now:
        points.append((now, cum))
    return points


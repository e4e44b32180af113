"""Hourly spend from the ledger, for budget forecasts and spike detection.

These are small per-budget (or per-workspace) series over a few weeks, so they are read with
one aggregate query on the system of record rather than through the analytics warehouse.
Rows are bucketed by UTC hour in SQL (the only grain both SQLite and PostgreSQL can cut
alike), then placed on the workspace's local calendar in Python; in a time zone whose offset
is not a whole number of hours, a bucket's spend is counted on the day its hour starts in.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from engine.models import LedgerEntry


def _hour(dialect: str):
    if dialect == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", LedgerEntry.created_at))
    return func.strftime("%Y-%m-%d %H:00:00", LedgerEntry.created_at)


def _as_utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC)


def hourly(session: Session, workspace_id: int, where: ColumnElement[bool], start: datetime,
           end: datetime) -> dict[datetime, Decimal]:
    """Spend per UTC hour in ``[start, end)`` of the ledger rows matching ``where``."""
    hour = _hour(session.get_bind().dialect.name).label("hour")
    rows = session.execute(
        select(hour, func.sum(LedgerEntry.cost))
        .where(LedgerEntry.workspace_id == workspace_id, LedgerEntry.created_at >= start,
               LedgerEntry.created_at < end, LedgerEntry.cost.is_not(None), where)
        .group_by(hour)
    ).all()
    return {_as_utc(h): cost for h, cost in rows if cost}


def hourly_by(session: Session, workspace_id: int, key: ColumnElement, start: datetime,
              end: datetime) -> dict[object, dict[datetime, Decimal]]:
    """Spend per UTC hour in ``[start, end)`` for each value of ``key`` (a ledger column)."""
    hour = _hour(session.get_bind().dialect.name).label("hour")
    rows = session.execute(
        select(key, hour, func.sum(LedgerEntry.cost))
        .where(LedgerEntry.workspace_id == workspace_id, LedgerEntry.created_at >= start,
               LedgerEntry.created_at < end, LedgerEntry.cost.is_not(None))
        .group_by(key, hour)
    ).all()
    out: dict[object, dict[datetime, Decimal]] = defaultdict(dict)
    for k, h, cost in rows:
        if cost:
            out[k][_as_utc(h)] = cost
    return dict(out)


def daily(hours: dict[datetime, Decimal], tz: str) -> dict[date, Decimal]:
    """Hourly spend summed per local calendar day."""
    zone = ZoneInfo(tz)
    days: dict[date, Decimal] = defaultdict(Decimal)
    for at, cost in hours.items():
        days[at.astimezone(zone).date()] += cost
    return dict(days)

"""A report's schedule, kept as a row of ``engine.schedules`` (``kind="report"``, ``target_id`` = the report).

The report services speak only through these few functions, so the contract with the
schedules module (docs/architecture.md, "Schedules as built") is in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import InvalidInput
from engine.permissions import Actor, in_workspace
from engine.schedules import cron as _cron
from engine.schedules import store as _store

KIND = "report"


def _modules():
    return _cron, _store


# --- reports as schedule targets (engine.schedules asks these for its lists and its checks) -------


def _report_name(s: Session, actor: Actor, report_id: int) -> str:
    from engine.reports.models import Report

    return in_workspace(s, Report, report_id, actor.workspace_id, "report").name


def _delivery_results(s: Session, fired: list) -> dict[int, str]:
    from engine.reports.models import ReportDelivery

    by_delivery = {f.delivery_id: f.id for f in fired if f.delivery_id is not None}
    if not by_delivery:
        return {}
    return {by_delivery[d]: status for d, status in s.execute(
        select(ReportDelivery.id, ReportDelivery.status).where(ReportDelivery.id.in_(by_delivery)))}


_store.register_target(KIND, _store.Target("report.write", _report_name, _delivery_results))


def check(cron_expr: str | None, timezone: str | None) -> None:
    """``InvalidInput`` unless the cron expression and the timezone are both good."""
    if not timezone:
        raise InvalidInput("Choose the time zone the schedule's times are in.")
    _cron.parse(" ".join((cron_expr or "").split()), timezone)


def next_times(cron_expr: str, timezone: str, n: int = 3, after: datetime | None = None) -> list[datetime]:
    """The next ``n`` sends (UTC) of an expression not saved yet; ``InvalidInput`` says what is wrong with it."""
    if not timezone:
        raise InvalidInput("Choose the time zone the schedule's times are in.")
    return _store.preview(" ".join((cron_expr or "").split()), timezone, n, after)


def for_report(actor: Actor, report_id: int) -> Any | None:
    _, store = _modules()
    found = store.for_target(actor, KIND, report_id)
    return found[0] if found else None


def by_report(actor: Actor) -> dict[int, Any]:
    _, store = _modules()
    return {s.target_id: s for s in store.list_schedules(actor, kind=KIND)}


def create(actor: Actor, report_id: int, name: str, cron_expr: str, timezone: str) -> Any:
    _, store = _modules()
    # No overlap: a report whose last send is still going out is not sent again on top of it.
    return store.create(actor, kind=KIND, target_id=report_id, cron=cron_expr.strip(), timezone=timezone,
                        name=name, no_overlap=True)


def apply(actor: Actor, report_id: int, name: str, current: Any | None, cron_expr: str | None,
          timezone: str | None) -> None:
    """Make the report's schedule say ``cron_expr``/``timezone`` (None: as it is; ``cron_expr=""``: none)."""
    _, store = _modules()
    if cron_expr == "":
        if current is not None:
            store.delete(actor, current.id)
        return
    if current is None:
        if cron_expr is None:
            raise InvalidInput("Give the schedule a cron expression, like 0 9 * * 1 for Mondays at 9:00.")
        create(actor, report_id, name, cron_expr, timezone or "UTC")
        return
    changes: dict[str, Any] = {"name": name}
    if cron_expr is not None:
        changes["cron"] = cron_expr.strip()
    if timezone is not None:
        changes["timezone"] = timezone
    store.update(actor, current.id, **changes)


def rename(actor: Actor, current: Any, name: str) -> None:
    _, store = _modules()
    store.update(actor, current.id, name=name)


def set_paused(actor: Actor, report_id: int, paused: bool) -> None:
    current = for_report(actor, report_id)
    if current is None:
        return
    _, store = _modules()
    current = for_report(actor, report_id)
    if current is not None and bool(current.paused) != paused:
        (store.pause if paused else store.resume)(actor, current.id)


def delete_for_report(s: Session, report_id: int) -> None:
    _, store = _modules()
    store.delete_for_target(s, KIND, report_id)

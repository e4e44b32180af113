"""Saved reports: create, change, pause, resume, delete, list; the schedule that sends each one.

A report is a source (a notebook, or a Cost & Usage view with its period and filters), the
people it goes to (members, by id, and other addresses; its owner when none is named), the
attachments (CSV, Excel, PDF) and whether to skip a send with nothing in it. Its schedule (cron
and timezone) is a row of ``engine.schedules`` (``kind="report"``); the sidecar fires it into
``deliveries.enqueue_scheduled``.

Editors change reports (``report.write``); every member reads them (``usage.read``). The
report runs as its owner, the member who made it: a notebook must be one its owner can read.
Everything is checked before anything is written, so a refusal leaves what is stored as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import audit, dashboards, db
from engine.accounts import check_name
from engine.billing import limits
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import Membership, Notebook, User, Workspace
from engine.permissions import Actor, authorize, in_workspace
from engine.reports import content, schedule_link
from engine.reports.addresses import parse_addresses
from engine.reports.models import FORMATS, SOURCES, Report, ReportDelivery

NOTEBOOK_NOT_FOUND = "That notebook does not exist, or its owner has not shared it."


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()


@dataclass(frozen=True)
class LastDelivery:
    id: int
    kind: str
    status: str
    error: str | None
    at: datetime


@dataclass(frozen=True)
class ReportView:
    id: int
    workspace_id: int
    name: str
    source: str
    notebook_id: int | None
    notebook_title: str | None
    view: dict[str, Any] | None
    formats: tuple[str, ...]
    recipient_user_ids: tuple[int, ...]
    recipient_addresses: tuple[str, ...]
    recipient_emails: tuple[str, ...]  # the members' addresses, then the others
    skip_if_empty: bool
    rerun_queries: bool
    paused: bool
    owner_id: int | None
    owner_name: str | None
    created_at: datetime
    updated_at: datetime
    last_delivery: LastDelivery | None
    schedule: Any | None = None  # engine.schedules' ScheduleView, when the report has one

    @property
    def source_label(self) -> str:
        if self.source == "notebook":
            return f"Notebook: {self.notebook_title or 'deleted notebook'}"
        period = (self.view or {}).get("period", "7d")
        return f"Cost & Usage: {dashboards.PERIODS.get(period, period)}"


@dataclass(frozen=True)
class Draft:
    """A report's fields, checked; what ``create`` stores and ``deliveries.preview`` renders unsaved."""

    name: str
    source: str
    notebook_id: int | None
    view: dict[str, Any] | None
    formats: list[str]
    recipient_user_ids: list[int]
    recipient_addresses: list[str]
    skip_if_empty: bool
    rerun_queries: bool


# --- checking -----------------------------------------------------------------------------


def notebook_readable(s: Session, workspace_id: int, notebook_id: int, user_id: int) -> Notebook:
    nb = s.get(Notebook, notebook_id)
    if nb is None or nb.workspace_id != workspace_id or not (nb.shared or nb.owner_id == user_id):
        raise NotFound(NOTEBOOK_NOT_FOUND)
    return nb


def _formats(formats: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(formats or ()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise InvalidInput(f"Attach {', '.join(FORMATS)}; {unknown[0]!r} is not one of them.")
    return [f for f in FORMATS if f in chosen]


def _members(s: Session, workspace_id: int, user_ids: Iterable[int]) -> list[int]:
    ids = []
    for uid in user_ids or ():
        if isinstance(uid, bool) or not isinstance(uid, int):
            raise InvalidInput("Members are chosen by their id.")
        ids.append(uid)
    ids = list(dict.fromkeys(ids))
    if ids:
        found = set(s.scalars(select(Membership.user_id).where(Membership.workspace_id == workspace_id,
                                                               Membership.user_id.in_(ids))))
        missing = [i for i in ids if i not in found]
        if missing:
            raise InvalidInput("Someone chosen as a recipient is not a member of this workspace.")
    return ids


def check_draft(s: Session, actor: Actor, owner_id: int, fields: dict[str, Any]) -> Draft:
    """The fields of a report, checked in session ``s`` for a report owned by ``owner_id``."""
    name = check_name(fields.get("name", ""), "Report name")
    if any(ord(c) < 32 for c in name):  # it becomes the email's subject: one line
        raise InvalidInput("A report name is one line of text.")
    source = fields.get("source")
    if source not in SOURCES:
        raise InvalidInput("A report sends a notebook or a Cost & Usage view.")
    notebook_id, view = None, None
    if source == "notebook":
        notebook_id = fields.get("notebook_id")
        if not isinstance(notebook_id, int) or isinstance(notebook_id, bool):
            raise InvalidInput("Pick the notebook this report sends.")
        notebook_readable(s, actor.workspace_id, notebook_id, owner_id)
        notebook_readable(s, actor.workspace_id, notebook_id, actor.user_id)
    else:
        parsed = content.view_from_dict(fields.get("view") or {})
        timezone = s.get(Workspace, actor.workspace_id).timezone
        dashboards.resolve(parsed, timezone)  # a custom period without dates, an unknown period: say so now
        view = content.view_to_dict(parsed)
    addresses = parse_addresses(fields.get("recipient_addresses") or ())
    user_ids = _members(s, actor.workspace_id, fields.get("recipient_user_ids") or ())
    if not user_ids and not addresses:
        raise InvalidInput("A report needs at least one recipient: a member or an email address.")
    if len(user_ids) + len(addresses) > 50:
        raise InvalidInput("A report goes to at most 50 recipients.")
    skip, rerun = fields.get("skip_if_empty", True), fields.get("rerun_queries", True)
    if not isinstance(skip, bool) or not isinstance(rerun, bool):
        raise InvalidInput("Skip if empty and run the queries again are yes or no.")
    return Draft(name, source, notebook_id, view, _formats(fields.get("formats") or ()), user_ids, addresses, skip,
                 rerun)


# --- reading ------------------------------------------------------------------------------


def _view(s: Session, r: Report, schedule=None) -> ReportView:
    nb_title = s.scalar(select(Notebook.title).where(Notebook.id == r.notebook_id)) if r.notebook_id else None
    owner_name = s.scalar(select(User.name).where(User.id == r.owner_id)) if r.owner_id else None
    emails = list(s.scalars(select(User.email).join(Membership, Membership.user_id == User.id).where(
        Membership.workspace_id == r.workspace_id, User.id.in_(r.recipient_user_ids or [-1])))) if r.recipient_user_ids else []
    last = s.scalars(select(ReportDelivery).where(ReportDelivery.report_id == r.id)
                     .order_by(ReportDelivery.id.desc()).limit(1)).first()
    return ReportView(
        r.id, r.workspace_id, r.name, r.source, r.notebook_id, nb_title, r.view, tuple(r.formats or ()),
        tuple(r.recipient_user_ids or ()), tuple(r.recipient_addresses or ()),
        tuple(emails) + tuple(r.recipient_addresses or ()), r.skip_if_empty, r.rerun_queries, r.paused, r.owner_id,
        owner_name,
        r.created_at, r.updated_at,
        LastDelivery(last.id, last.kind, last.status, last.error, last.finished_at or last.created_at) if last else None,
        schedule,
    )


def get(actor: Actor, report_id: int) -> ReportView:
    with db.read_session() as s:
        authorize(s, actor, "usage.read")
        r = in_workspace(s, Report, report_id, actor.workspace_id, "report")
        view = _view(s, r)
    return _with_schedule(actor, view)


def list_reports(actor: Actor) -> list[ReportView]:
    with db.read_session() as s:
        authorize(s, actor, "usage.read")
        rows = s.scalars(select(Report).where(Report.workspace_id == actor.workspace_id).order_by(Report.name)).all()
        views = [_view(s, r) for r in rows]
    schedules = schedule_link.by_report(actor)
    return [_replace_schedule(v, schedules.get(v.id)) for v in views]


def _replace_schedule(view: ReportView, schedule) -> ReportView:
    from dataclasses import replace

    return replace(view, schedule=schedule)


def _with_schedule(actor: Actor, view: ReportView) -> ReportView:
    return _replace_schedule(view, schedule_link.for_report(actor, view.id))


# --- writing ------------------------------------------------------------------------------


def create(actor: Actor, *, name: str, source: str, notebook_id: int | None = None,
           view: dict[str, Any] | dashboards.View | None = None, formats: Iterable[str] = (),
           recipient_user_ids: Iterable[int] | None = None, recipient_addresses: Iterable[str] | str = (),
           skip_if_empty: bool = True, rerun_queries: bool = True, cron: str | None = None,
           timezone: str | None = None) -> ReportView:
    """A new report owned by ``actor``; it goes to the owner when no recipient is named. With ``cron``, scheduled."""
    limits.require_feature(actor.workspace_id, "reports")
    if isinstance(view, dashboards.View):
        view = content.view_to_dict(view)
    if recipient_user_ids is None and not recipient_addresses:
        recipient_user_ids = [actor.user_id]
    if cron:
        schedule_link.check(cron, timezone)
    fields = dict(name=name, source=source, notebook_id=notebook_id, view=view, formats=formats,
                  recipient_user_ids=recipient_user_ids, recipient_addresses=recipient_addresses,
                  skip_if_empty=skip_if_empty, rerun_queries=rerun_queries)
    try:
        with db.transaction() as s:
            authorize(s, actor, "report.write")
            d = check_draft(s, actor, actor.user_id, fields)
            r = Report(workspace_id=actor.workspace_id, owner_id=actor.user_id, name=d.name, source=d.source,
                       notebook_id=d.notebook_id, view=d.view, formats=d.formats,
                       recipient_user_ids=d.recipient_user_ids, recipient_addresses=d.recipient_addresses,
                       skip_if_empty=d.skip_if_empty, rerun_queries=d.rerun_queries)
            s.add(r)
            s.flush()
            audit.record_for(s, actor, "report.created", "report", r.id, name=d.name, source=d.source)
            report_id = r.id
    except IntegrityError:
        raise Conflict(f"There is already a report called {name.strip()!r}. Pick another name.") from None
    if cron:
        try:
            schedule_link.create(actor, report_id, d.name, cron, timezone)
        except Exception:
            _remove(report_id)  # no half-made report: the schedule was refused (a plan limit, a bad cron)
            raise
    return get(actor, report_id)


def _remove(report_id: int) -> None:
    with db.transaction() as s:
        r = s.get(Report, report_id)
        if r is not None:
            s.delete(r)


def update(actor: Actor, report_id: int, **changes: Any) -> ReportView:
    """Change any of ``create``'s fields; ``cron=""`` removes the schedule, ``cron``/``timezone`` set it."""
    unknown = set(changes) - {"name", "source", "notebook_id", "view", "formats", "recipient_user_ids",
                              "recipient_addresses", "skip_if_empty", "rerun_queries", "cron", "timezone"}
    if unknown:
        raise InvalidInput(f"A report has no field {sorted(unknown)[0]!r}.")
    limits.require_feature(actor.workspace_id, "reports")
    cron, timezone = changes.pop("cron", KEEP), changes.pop("timezone", KEEP)
    if isinstance(changes.get("view"), dashboards.View):
        changes["view"] = content.view_to_dict(changes["view"])
    current_schedule = schedule_link.for_report(actor, report_id)
    if not isinstance(cron, _Keep) and cron:
        tz = timezone if not isinstance(timezone, _Keep) else getattr(current_schedule, "timezone", None)
        schedule_link.check(cron, tz)
    try:
        with db.transaction() as s:
            authorize(s, actor, "report.write")
            r = in_workspace(s, Report, report_id, actor.workspace_id, "report")
            fields = dict(name=r.name, source=r.source, notebook_id=r.notebook_id, view=r.view, formats=r.formats,
                          recipient_user_ids=r.recipient_user_ids, recipient_addresses=r.recipient_addresses,
                          skip_if_empty=r.skip_if_empty, rerun_queries=r.rerun_queries)
            fields.update(changes)
            d = check_draft(s, actor, r.owner_id or actor.user_id, fields)
            r.name, r.source, r.notebook_id, r.view = d.name, d.source, d.notebook_id, d.view
            r.formats, r.recipient_user_ids, r.recipient_addresses = d.formats, d.recipient_user_ids, d.recipient_addresses
            r.skip_if_empty, r.rerun_queries, r.updated_at = d.skip_if_empty, d.rerun_queries, utcnow()
            audit.record_for(s, actor, "report.updated", "report", r.id, fields=sorted(changes))
            s.flush()
    except IntegrityError:
        raise Conflict(f"There is already a report called {changes.get('name', '').strip()!r}. Pick another name.") from None
    if not isinstance(cron, _Keep) or not isinstance(timezone, _Keep):
        schedule_link.apply(actor, report_id, d.name, current_schedule,
                            None if isinstance(cron, _Keep) else cron,
                            None if isinstance(timezone, _Keep) else timezone)
    elif current_schedule is not None and getattr(current_schedule, "name", d.name) != d.name:
        schedule_link.rename(actor, current_schedule, d.name)
    return get(actor, report_id)


def set_paused(actor: Actor, report_id: int, paused: bool) -> ReportView:
    """Pause (no scheduled sends; Send now and tests still work) or resume, with the report's schedule."""
    with db.transaction() as s:
        authorize(s, actor, "report.write")
        r = in_workspace(s, Report, report_id, actor.workspace_id, "report")
        r.paused, r.updated_at = bool(paused), utcnow()
        audit.record_for(s, actor, "report.paused" if paused else "report.resumed", "report", r.id)
    schedule_link.set_paused(actor, report_id, paused)
    return get(actor, report_id)


def pause(actor: Actor, report_id: int) -> ReportView:
    return set_paused(actor, report_id, True)


def resume(actor: Actor, report_id: int) -> ReportView:
    return set_paused(actor, report_id, False)


def delete(actor: Actor, report_id: int) -> str:
    """Delete the report, its schedule and its history, in one transaction; returns its name."""
    with db.transaction() as s:
        authorize(s, actor, "report.write")
        r = in_workspace(s, Report, report_id, actor.workspace_id, "report")
        name = r.name
        schedule_link.delete_for_report(s, report_id)
        audit.record_for(s, actor, "report.deleted", "report", r.id, name=name)
        s.delete(r)
    return name


def count(workspace_id: int) -> int:
    with db.read_session() as s:
        return int(s.scalar(select(func.count()).select_from(Report).where(Report.workspace_id == workspace_id)))

"""From a queued delivery (or an unsaved draft) to the exact message that goes out, and deliveries as shown.

``compose`` reads the delivery and its report, renders the report as its owner and says whom
it goes to, or why it is skipped. ``preview`` does the same for the editor's page without
queueing anything: the MIME message, the HTML as sent and the same HTML with its images inline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from engine import db, notebook_runs, notebooks
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, MeterbookError, NotFound, PermissionDenied
from engine.models import Membership, User, Workspace
from engine.permissions import Actor, authorize, in_workspace
from engine.reports import content as contents
from engine.reports import render
from engine.reports.models import Report, ReportDelivery


@dataclass(frozen=True)
class DeliveryView:
    id: int
    report_id: int
    kind: str
    fire_time: datetime | None
    status: str
    attempts: int
    error: str | None
    note: str | None
    recipients: tuple[str, ...]
    message_id: str | None
    resend_of: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    notice: str
    notice_sent_at: datetime | None
    notice_error: str | None

    @property
    def outcome(self) -> str:
        """One line for a history table: the status with why."""
        if self.status == "queued" and self.error:
            return f"Retrying (attempt {self.attempts + 1}): {self.error}"
        if self.status == "failed":
            told = {"sent": " The owner was told.", "pending": " The owner will be told once email works."}
            return f"{self.error}{told.get(self.notice, '')}"
        if self.status == "skipped":
            return self.note or "Skipped."
        if self.status == "sent":
            return f"Sent to {len(self.recipients)} recipient{'s' if len(self.recipients) != 1 else ''}."
        return ""


def delivery_view(d: ReportDelivery) -> DeliveryView:
    return DeliveryView(d.id, d.report_id, d.kind, d.fire_time, d.status, d.attempts, d.error, d.note,
                        tuple(d.recipients or ()), d.message_id, d.resend_of, d.created_at, d.started_at,
                        d.finished_at, d.next_attempt_at if d.status == "queued" else None, d.notice,
                        d.notice_sent_at, d.notice_error)


@dataclass(frozen=True)
class Message:
    """What a delivery sends: rendered, with its recipients; ``skip_reason`` when nothing is to be sent."""

    workspace_id: int
    recipients: list[str]
    rendered: render.Rendered
    skip_reason: str | None
    delivery_id: int | None = None

    def email(self, sender: str) -> EmailMessage:
        extra = {"X-Meterbook-Delivery": str(self.delivery_id)} if self.delivery_id else None
        return render.build(self.rendered, sender=sender, to=self.recipients, extra_headers=extra)


def recipients_of(s, r: Report | Any) -> list[str]:
    """The report's recipients' addresses now: its members still in the workspace, then its other addresses."""
    emails: list[str] = []
    if r.recipient_user_ids:
        emails = list(s.scalars(select(User.email).join(Membership, Membership.user_id == User.id).where(
            Membership.workspace_id == r.workspace_id, User.id.in_(list(r.recipient_user_ids))).order_by(User.id)))
    seen = {e.lower() for e in emails}
    return emails + [a for a in r.recipient_addresses or () if a.lower() not in seen]


def _owner(s, r: Report) -> Actor:
    if r.owner_id is None:
        raise PermissionDenied("The report has no owner any more (their account was deleted); "
                               "make it again under your name.")
    if s.scalar(select(Membership.id).where(Membership.workspace_id == r.workspace_id,
                                            Membership.user_id == r.owner_id)) is None:
        raise PermissionDenied("The report's owner is no longer a member of this workspace, and reports run as "
                               "their owner; make it again under a member's name.")
    return Actor(r.owner_id, r.workspace_id)


def _rerun_queries(owner: Actor, notebook_id: int) -> None:
    """Run the notebook's SQL cells again as its owner; a failing query keeps its error, which the email shows."""
    for cell in notebooks.get_notebook(owner, notebook_id).cells:
        if cell.kind == "sql" and cell.source.strip():
            notebook_runs.run_cell(owner, cell.id)


def _render(owner: Actor, r: Report | Any, as_of: datetime, *, rerun: bool = False) -> tuple[render.Rendered, str | None]:
    name = r.name
    if r.source == "notebook" and rerun and r.rerun_queries and r.notebook_id is not None:
        _rerun_queries(owner, r.notebook_id)
    if r.source == "notebook":
        c = contents.from_notebook(owner, r.notebook_id, name)
    else:
        c = contents.from_dashboard(owner, r.view, name, as_of)
    with db.read_session() as s:
        tz = s.get(Workspace, owner.workspace_id).timezone
    link = f"{get_settings().base_url.rstrip('/')}/reports"
    return render.render(c, list(r.formats or ()), link=link, when=as_of.astimezone(ZoneInfo(tz))), c.empty_reason


def compose(delivery_id: int) -> Message:
    with db.read_session() as s:
        d = s.get(ReportDelivery, delivery_id)
        if d is None:
            raise NotFound("That delivery no longer exists.")
        r = s.get(Report, d.report_id)
        owner = _owner(s, r)
        if d.kind == "test":
            to = [s.scalar(select(User.email).where(User.id == d.requested_by))] if d.requested_by else []
            to = [e for e in to if e]
        else:
            to = recipients_of(s, r)
        kind, as_of = d.kind, d.as_of
        s.expunge(r)
    if not to:
        raise InvalidInput("The report has no recipients left: the members it went to have left the workspace.")
    rendered, empty = _render(owner, r, as_of, rerun=True)
    skip = f"Skipped: {empty}" if empty and r.skip_if_empty and kind != "test" else None
    return Message(r.workspace_id, to, rendered, skip, delivery_id)


@dataclass(frozen=True)
class Preview:
    subject: str
    recipients: list[str]
    message: EmailMessage  # exactly what would be handed to the mail server (the Message-ID aside)
    html: str  # as sent: cid: images
    preview_html: str  # with the images inline, for showing on a page
    attachments: list[tuple[str, str, int]]  # file name, MIME type, bytes
    empty_reason: str | None
    skip_if_empty: bool


def preview(actor: Actor, report_id: int | None = None, draft: dict[str, Any] | None = None) -> Preview:
    """The email a saved report (or an unsaved ``draft`` of ``store.create``'s fields) would send now."""
    from engine.reports import smtp_settings, store

    with db.read_session() as s:
        authorize(s, actor, "usage.read")
        if report_id is not None:
            r = in_workspace(s, Report, report_id, actor.workspace_id, "report")
            if r.source == "notebook" and r.notebook_id is not None:
                store.notebook_readable(s, actor.workspace_id, r.notebook_id, actor.user_id)
            owner = _owner(s, r)
            s.expunge(r)
            source = r
        elif draft is not None:
            fields = dict(draft)
            if fields.get("recipient_user_ids") is None and not fields.get("recipient_addresses"):
                fields["recipient_user_ids"] = [actor.user_id]
            d = store.check_draft(s, actor, actor.user_id, fields)
            source = _DraftSource(actor.workspace_id, d)
            owner = actor
        else:
            raise InvalidInput("Preview a saved report or a draft of one.")
        to = recipients_of(s, source)
    rendered, empty = _render(owner, source, utcnow())
    try:
        sender = smtp_settings.config_for(actor.workspace_id).from_address
    except MeterbookError:  # no server set up yet: the preview still shows the message
        sender = get_settings().smtp_from
    msg = render.build(rendered, sender=sender, to=to)
    return Preview(rendered.subject, to, msg, rendered.html, rendered.preview_html(),
                   [(a.filename, a.mime, len(a.data)) for a in rendered.attachments], empty, source.skip_if_empty)


class _DraftSource:
    """A checked draft in the shape of a Report row, for rendering unsaved."""

    def __init__(self, workspace_id: int, d):
        self.workspace_id = workspace_id
        self.name, self.source, self.notebook_id, self.view = d.name, d.source, d.notebook_id, d.view
        self.formats, self.skip_if_empty, self.rerun_queries = d.formats, d.skip_if_empty, d.rerun_queries
        self.recipient_user_ids, self.recipient_addresses = d.recipient_user_ids, d.recipient_addresses

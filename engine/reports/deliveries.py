"""Deliveries: every send of a report, queued, claimed by a worker, rendered, sent, and recorded as it really went.

    send_now / send_test / resend / enqueue_scheduled   → a queued row (scheduled: one per fire time)
    work(worker_id, stop) in the sidecar                → claim → render as the owner → SMTP → sent | failed | skipped

A worker claims a row with one conditional UPDATE (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
so workers never queue behind each other's locks) and holds it under a lease. A send that
fails at the mail server is tried again later (``BACKOFF_S``) up to ``MAX_ATTEMPTS`` times; one
that cannot succeed (the notebook was deleted, the owner left) fails at once. A row still
``sending`` when its lease ends lost its worker mid-send: it is marked failed ("timed out") and
never sent again on its own, since the mail may already have gone out; Resend is one click.

When a delivery fails for good, its report's owner is told once: the row's ``notice`` goes
``pending``, and the next round sends the owner one email listing every failure still untold
(through the same server, so it waits, retried, until the server works again), then marks
them ``sent`` so no failure is told twice.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from engine import db, smtp
from engine.billing import limits
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.errors import Conflict, MeterbookError, NotFound
from engine.models import User
from engine.notify import DeliveryFailed
from engine.permissions import Actor, authorize, in_workspace
from engine.reports import schedule_link, smtp_settings  # noqa: F401  (schedule_link: the target registration)
from engine.reports.models import FINISHED, Report, ReportDelivery
from engine.reports.outbox import DeliveryView, compose, delivery_view, preview  # noqa: F401  (preview: re-exported)

log = logging.getLogger(__name__)

LEASE_S = 300.0  # rendering and handing over one email takes seconds; past this the worker is gone
MAX_ATTEMPTS = 3
BACKOFF_S = (60.0, 300.0)  # wait after the first and second failures
NOTICE_BACKOFF_S = (60.0, 300.0, 900.0)  # and for the owner's notice, which is tried until it goes
TIMED_OUT = ("Timed out: the worker sending it stopped before it finished. It was not sent again in case it "
             "had already gone out; use Resend if it did not arrive.")


# --- asking for a send ----------------------------------------------------------------------


def _queue(s, r: Report, kind: str, *, requested_by: int | None, as_of: datetime, fire_time: datetime | None = None,
           resend_of: int | None = None) -> int:
    d = ReportDelivery(workspace_id=r.workspace_id, report_id=r.id, kind=kind, fire_time=fire_time, as_of=as_of,
                       status="queued", requested_by=requested_by, resend_of=resend_of, next_attempt_at=utcnow())
    s.add(d)
    s.flush()
    return d.id


def _manual(actor: Actor, report_id: int, kind: str) -> int:
    limits.require_feature(actor.workspace_id, "reports")
    with db.transaction() as s:
        authorize(s, actor, "report.write")
        r = in_workspace(s, Report, report_id, actor.workspace_id, "report")
        return _queue(s, r, kind, requested_by=actor.user_id, as_of=utcnow())


def send_now(actor: Actor, report_id: int) -> int:
    """Queue a send to the report's recipients now (paused or not); the delivery's id."""
    return _manual(actor, report_id, "now")


def send_test(actor: Actor, report_id: int) -> int:
    """Queue a send to the acting member only, even when empty; the delivery's id."""
    return _manual(actor, report_id, "test")


def resend(actor: Actor, delivery_id: int) -> int:
    """Send a finished delivery again, to the report's recipients, covering the same period."""
    limits.require_feature(actor.workspace_id, "reports")
    with db.transaction() as s:
        authorize(s, actor, "report.write")
        old = in_workspace(s, ReportDelivery, delivery_id, actor.workspace_id, "delivery")
        if old.status not in FINISHED:
            raise Conflict("That delivery is still going out; wait for it to finish before sending it again.")
        r = s.get(Report, old.report_id)
        kind_of_old = old.kind
        return _queue(s, r, "test" if kind_of_old == "test" else "resend", requested_by=actor.user_id,
                      as_of=old.as_of, resend_of=old.id)


def _utc(t: datetime) -> datetime:
    return (t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC))


def enqueue_scheduled(report_id: int, fire_time: datetime) -> int:
    """The delivery for one firing of the report's schedule, made once: asking again returns the same id.

    Runs with no actor (the sidecar); the send runs as the report's owner. Refuses a paused report
    or a plan without reports, with a message for the firing's record.
    """
    fire_time = _utc(fire_time)
    with db.read_session() as s:
        existing = s.scalar(select(ReportDelivery.id).where(ReportDelivery.report_id == report_id,
                                                            ReportDelivery.fire_time == fire_time))
        if existing is not None:
            return existing
        r = s.get(Report, report_id)
        if r is None:
            raise NotFound("That report no longer exists.")
        workspace_id, paused = r.workspace_id, r.paused
    if paused:
        raise Conflict("The report is paused.")
    limits.require_feature(workspace_id, "reports")
    try:
        with db.transaction() as s:
            r = s.get(Report, report_id)
            if r is None:
                raise NotFound("That report no longer exists.")
            return _queue(s, r, "scheduled", requested_by=None, as_of=fire_time, fire_time=fire_time)
    except IntegrityError:  # the same firing enqueued at the same moment elsewhere: that one stands
        with db.read_session() as s:
            return s.scalar(select(ReportDelivery.id).where(ReportDelivery.report_id == report_id,
                                                            ReportDelivery.fire_time == fire_time))


def is_unfinished(delivery_id: int) -> bool:
    with db.read_session() as s:
        status = s.scalar(select(ReportDelivery.status).where(ReportDelivery.id == delivery_id))
    return status is not None and status not in FINISHED


def history(actor: Actor, report_id: int, limit: int = 50) -> list[DeliveryView]:
    with db.read_session() as s:
        authorize(s, actor, "usage.read")
        in_workspace(s, Report, report_id, actor.workspace_id, "report")
        rows = s.scalars(select(ReportDelivery).where(ReportDelivery.report_id == report_id)
                         .order_by(ReportDelivery.id.desc()).limit(limit)).all()
        return [delivery_view(d) for d in rows]


def get_delivery(actor: Actor, delivery_id: int) -> DeliveryView:
    with db.read_session() as s:
        authorize(s, actor, "usage.read")
        return delivery_view(in_workspace(s, ReportDelivery, delivery_id, actor.workspace_id, "delivery"))


# --- the worker -----------------------------------------------------------------------------


def _claimable(now: datetime):
    return (ReportDelivery.status == "queued") & (ReportDelivery.next_attempt_at <= now)


def claim(worker_id: str, *, now: datetime | None = None, lease_s: float = LEASE_S) -> int | None:
    """Take one queued delivery that is due; its id, or None when there is none."""
    now = now or utcnow()
    values = dict(status="sending", claimed_by=worker_id, lease_expires_at=now + timedelta(seconds=lease_s),
                  attempts=ReportDelivery.attempts + 1, started_at=now)
    if db.get_engine().dialect.name == "postgresql":
        with db.transaction() as s:
            candidate = s.scalar(select(ReportDelivery.id).where(_claimable(now))
                                 .order_by(ReportDelivery.next_attempt_at, ReportDelivery.id).limit(1)
                                 .with_for_update(skip_locked=True))
            if candidate is None:
                return None
            s.execute(update(ReportDelivery).where(ReportDelivery.id == candidate).values(**values))
            return candidate
    with db.read_session() as s:
        candidates = list(s.scalars(select(ReportDelivery.id).where(_claimable(now))
                                    .order_by(ReportDelivery.next_attempt_at, ReportDelivery.id).limit(8)))
    random.shuffle(candidates)  # workers polling together try the oldest few in their own orders
    for candidate in candidates:
        with db.transaction() as s:
            # The condition again inside the UPDATE: of two workers, one wins.
            if s.execute(update(ReportDelivery).where(ReportDelivery.id == candidate, _claimable(now))
                         .values(**values)).rowcount:
                return candidate
    return None


def _still_mine(delivery_id: int, worker_id: str, now: datetime) -> bool:
    """Renew this worker's lease for the send itself; False when the row was timed out meanwhile."""
    with db.transaction() as s:
        return bool(s.execute(update(ReportDelivery).where(
            ReportDelivery.id == delivery_id, ReportDelivery.claimed_by == worker_id,
            ReportDelivery.status == "sending").values(lease_expires_at=now + timedelta(seconds=LEASE_S))).rowcount)


def _finish(delivery_id: int, worker_id: str, **values) -> None:
    with db.transaction() as s:
        s.execute(update(ReportDelivery).where(ReportDelivery.id == delivery_id,
                                               ReportDelivery.claimed_by == worker_id).values(**values))


def _failed(delivery_id: int, worker_id: str, error: str, attempts: int, *, retry: bool, now: datetime,
            recipients: list[str] | None) -> str:
    if retry and attempts < MAX_ATTEMPTS:
        wait = BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1]
        _finish(delivery_id, worker_id, status="queued", error=error, claimed_by=None, lease_expires_at=None,
                next_attempt_at=now + timedelta(seconds=wait), recipients=recipients)
        return "queued"
    _finish(delivery_id, worker_id, status="failed", error=error, finished_at=utcnow(), lease_expires_at=None,
            notice="pending", notice_next_at=now, recipients=recipients)
    return "failed"


def process(delivery_id: int, worker_id: str, *, now: datetime | None = None) -> str:
    """Render and send a claimed delivery, and record what happened; returns the status it ended in."""
    now = now or utcnow()
    with db.read_session() as s:
        attempts = s.scalar(select(ReportDelivery.attempts).where(ReportDelivery.id == delivery_id))
    try:
        message = compose(delivery_id)
    except MeterbookError as exc:  # nothing a retry would change: no notebook, no owner, a bad view
        return _failed(delivery_id, worker_id, str(exc), attempts, retry=False, now=now, recipients=None)
    except Exception as exc:
        log.exception("rendering report delivery %s", delivery_id)
        return _failed(delivery_id, worker_id, f"The report could not be rendered: {type(exc).__name__}: {exc}",
                       attempts, retry=False, now=now, recipients=None)
    if not _still_mine(delivery_id, worker_id, now):
        # Rendering outlasted the lease and the row was timed out (and its owner told): sending now
        # would turn a recorded failure into a surprise email. It stays failed; Resend is there.
        log.warning("report delivery %s timed out while %s rendered it; not sending", delivery_id, worker_id)
        return "failed"
    if message.skip_reason:
        _finish(delivery_id, worker_id, status="skipped", note=message.skip_reason, error=None,
                finished_at=utcnow(), lease_expires_at=None, recipients=message.recipients)
        return "skipped"
    try:
        config = smtp_settings.config_for(message.workspace_id)
        msg = message.email(config.from_address)
        smtp.send(config, msg, message.recipients)
    except DeliveryFailed as exc:
        return _failed(delivery_id, worker_id, str(exc), attempts, retry=True, now=now, recipients=message.recipients)
    # Whatever the row says now (even "timed out" after a send slower than the lease), the mail went.
    _finish(delivery_id, worker_id, status="sent", error=None, finished_at=utcnow(), lease_expires_at=None,
            message_id=msg["Message-ID"], recipients=message.recipients, notice="none")
    return "sent"


def time_out_stuck(now: datetime | None = None) -> int:
    """Mark failed every delivery whose worker's lease ended mid-send; how many."""
    now = now or utcnow()
    with db.transaction() as s:
        return s.execute(update(ReportDelivery).where(ReportDelivery.status == "sending",
                                                      ReportDelivery.lease_expires_at < now).values(
            status="failed", error=TIMED_OUT, finished_at=now, notice="pending", notice_next_at=now)).rowcount


def send_notices(now: datetime | None = None) -> int:
    """Tell owners of their reports' failed deliveries, one email per owner; how many emails went."""
    now = now or utcnow()
    due = or_(ReportDelivery.notice_next_at.is_(None), ReportDelivery.notice_next_at <= now)
    with db.read_session() as s:
        rows = s.execute(select(ReportDelivery.id, ReportDelivery.workspace_id, Report.owner_id)
                         .join(Report, Report.id == ReportDelivery.report_id)
                         .where(ReportDelivery.notice == "pending", due).order_by(ReportDelivery.id).limit(200)).all()
    groups: dict[tuple[int, int | None], list[int]] = {}
    for delivery_id, workspace_id, owner_id in rows:
        groups.setdefault((workspace_id, owner_id), []).append(delivery_id)
    sent = 0
    for (workspace_id, owner_id), ids in groups.items():
        if owner_id is None:
            with db.transaction() as s:
                s.execute(update(ReportDelivery).where(ReportDelivery.id.in_(ids)).values(
                    notice="none", notice_error="The report has no owner to tell."))
            continue
        mine = []
        for delivery_id in ids:  # claim each row for a few minutes, so two workers never tell the same failure
            with db.transaction() as s:
                if s.execute(update(ReportDelivery).where(ReportDelivery.id == delivery_id,
                                                          ReportDelivery.notice == "pending", due)
                             .values(notice_next_at=now + timedelta(seconds=LEASE_S))).rowcount:
                    mine.append(delivery_id)
        if mine and _tell_owner(workspace_id, owner_id, mine, now):
            sent += 1
    return sent


def _tell_owner(workspace_id: int, owner_id: int, ids: list[int], now: datetime) -> bool:
    with db.read_session() as s:
        email = s.scalar(select(User.email).where(User.id == owner_id))
        failures = s.execute(select(ReportDelivery, Report.name).join(Report, Report.id == ReportDelivery.report_id)
                             .where(ReportDelivery.id.in_(ids)).order_by(ReportDelivery.id)).all()
        attempts = max(d.notice_attempts for d, _ in failures)
        lines = [f"- {name} ({d.kind}, {d.created_at:%Y-%m-%d %H:%M} UTC): {d.error}" for d, name in failures]
    base = get_settings().base_url.rstrip("/")
    subject = (f"[Meterbook] Report “{failures[0][1]}” could not be sent" if len(failures) == 1
               else f"[Meterbook] {len(failures)} report deliveries could not be sent")
    text = ("These report deliveries failed and were not sent:\n\n" + "\n".join(lines) +
            f"\n\nFix the mail server under Settings → Email if that is the cause, then use Resend on the "
            f"Reports page: {base}/reports\n")
    try:
        config = smtp_settings.config_for(workspace_id)
        smtp.send(config, smtp.plain_message(config, [email], subject, text), [email])
    except DeliveryFailed as exc:
        wait = NOTICE_BACKOFF_S[min(attempts, len(NOTICE_BACKOFF_S) - 1)]
        with db.transaction() as s:
            s.execute(update(ReportDelivery).where(ReportDelivery.id.in_(ids)).values(
                notice_attempts=ReportDelivery.notice_attempts + 1, notice_error=str(exc),
                notice_next_at=now + timedelta(seconds=wait)))
        return False
    with db.transaction() as s:
        s.execute(update(ReportDelivery).where(ReportDelivery.id.in_(ids)).values(
            notice="sent", notice_sent_at=utcnow(), notice_error=None,
            notice_attempts=ReportDelivery.notice_attempts + 1))
    return True


def work_once(worker_id: str, *, now: datetime | None = None, stop: threading.Event | None = None) -> int:
    """Time out stuck sends, send every due delivery, tell owners of failures; how many deliveries ran."""
    time_out_stuck(now)
    count = 0
    while not (stop is not None and stop.is_set()) and (delivery_id := claim(worker_id, now=now)) is not None:
        process(delivery_id, worker_id, now=now)
        count += 1
    send_notices(now)
    return count


def work(worker_id: str, stop: threading.Event, *, poll_s: float = 2.0) -> None:
    """A worker loop for the sidecar: ``work_once``, then wait, until ``stop`` is set."""
    while not stop.is_set():
        try:
            ran = work_once(worker_id, stop=stop)
        except Exception:  # the database went away for a moment: try again, never die
            log.exception("report worker %s", worker_id)
            ran = 0
        if not ran:
            stop.wait(poll_s)

"""Reports going out through a real SMTP server (aiosmtpd on 127.0.0.1): what arrives, parsed with ``email``.

Recipients, the HTML with its charts as cid: images, CSV / Excel / PDF attachments, skip if empty,
a mail server that is down or refusing (failed, retried, the owner told once it recovers), a send
stuck past its lease, and scheduled enqueues that are idempotent. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import func, select

from engine import db
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.errors import Conflict
from engine.reports import deliveries, smtp_settings, store
from engine.reports.models import ReportDelivery
from tests.factories import member, owner
from tests.report_helpers import (MailServer, attachments, chart_notebook, free_port, html_of, inline_images,
                                  spend)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ws(database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("METERBOOK_BASE_URL", "https://meter.example")
    monkeypatch.delenv("METERBOOK_SMTP_HOST", raising=False)
    get_settings.cache_clear()
    boss = owner()
    yield boss
    get_settings.cache_clear()


@pytest.fixture
def server():
    mail = MailServer().start()
    yield mail
    mail.stop()


def use_server(actor, port: int) -> None:
    smtp_settings.save(actor, host="127.0.0.1", port=port, security="none", from_address="reports@meter.example")


def dashboard_report(actor, **fields):
    defaults = dict(name="Weekly spend", source="dashboard", view={"period": "7d"}, formats=["csv", "xlsx", "pdf"],
                    recipient_addresses=["cfo@example.com"], recipient_user_ids=[actor.user_id])
    return store.create(actor, **{**defaults, **fields})


def one_delivery(actor, report_id):
    [d] = deliveries.history(actor, report_id)
    return d


def test_a_cost_and_usage_report_arrives_with_figures_inline_charts_and_attachments(ws, server):
    spend(ws)
    use_server(ws, server.port)
    report = dashboard_report(ws)
    deliveries.send_now(ws, report.id)
    assert deliveries.work_once("w1") == 1

    [(sender, rcpts, msg)] = server.messages
    assert sender == "reports@meter.example"
    assert rcpts == ["owner@example.com", "cfo@example.com"] and msg["To"] == "owner@example.com, cfo@example.com"
    assert msg["Subject"].startswith("Weekly spend · ")
    html = html_of(msg)
    assert "Spend" in html and "$2.50" in html and "Avg cost per call" in html and "Latency p95" in html
    images = inline_images(msg)
    cids = {c.split("@")[0] for c in images}
    assert {"spend-over-time"} <= cids
    for cid, png in images.items():
        assert f'src="cid:{cid}"' in html and png.startswith(PNG)
    assert "<script" not in html.lower()

    files = attachments(msg)
    stem = msg["Subject"].split(" · ")[1]
    rows_csv = files[f"weekly-spend-{stem}-ledger-rows.csv"]
    assert rows_csv[0] == "text/csv"
    ledger = pl.read_csv(io.BytesIO(rows_csv[1]))
    assert ledger.height == 3 and sorted(ledger["provider"].to_list()) == ["anthropic", "openai", "openai"]
    providers = pl.read_csv(io.BytesIO(files[f"weekly-spend-{stem}-providers.csv"][1]))
    assert providers["provider"].to_list() == ["openai", "anthropic"]
    xlsx_type, xlsx = files[f"weekly-spend-{stem}.xlsx"]
    assert xlsx_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    with zipfile.ZipFile(io.BytesIO(xlsx)) as book:
        workbook = book.read("xl/workbook.xml").decode()
        assert 'name="Ledger rows"' in workbook and 'name="Figures"' in workbook
        assert "xl/worksheets/sheet1.xml" in book.namelist()
    pdf_type, pdf = files[f"weekly-spend-{stem}.pdf"]
    assert pdf_type == "application/pdf" and pdf.startswith(b"%PDF") and b"/Image" in pdf

    d = one_delivery(ws, report.id)
    assert (d.status, d.kind, d.attempts, d.error) == ("sent", "now", 1, None)
    assert d.message_id == msg["Message-ID"] and d.recipients == ("owner@example.com", "cfo@example.com")
    assert store.get(ws, report.id).last_delivery.status == "sent"
    assert deliveries.work_once("w1") == 0  # sent once


def test_a_notebook_report_has_its_note_table_and_chart(ws, server):
    spend(ws)
    use_server(ws, server.port)
    nb = chart_notebook(ws)
    report = store.create(ws, name="Notebook mail", source="notebook", notebook_id=nb, formats=["csv"])
    assert report.recipient_emails == ("owner@example.com",)  # the owner, when nobody is named
    deliveries.send_now(ws, report.id)
    deliveries.work_once("w1")
    [(_, rcpts, msg)] = server.messages
    assert rcpts == ["owner@example.com"]
    html = html_of(msg)
    assert "<h1>Weekly spend</h1>" in html and "<strong>provider</strong>" in html
    assert "anthropic" in html and "openai" in html
    [(cid, png)] = inline_images(msg).items()
    assert cid.startswith("chart-3@") and f"cid:{cid}" in html and png.startswith(PNG)
    [(name, (kind, data))] = attachments(msg).items()
    assert name.endswith("-cell-2.csv") and kind == "text/csv"
    assert pl.read_csv(io.BytesIO(data))["calls"].to_list() == [1, 2]


def test_skip_if_empty_sends_nothing_but_a_test_still_goes(ws, server):
    use_server(ws, server.port)  # no spend at all in this workspace
    report = dashboard_report(ws, formats=[])
    deliveries.send_now(ws, report.id)
    deliveries.work_once("w1")
    d = one_delivery(ws, report.id)
    assert d.status == "skipped" and d.note == "Skipped: No calls were made in the period." and server.messages == []
    deliveries.send_test(ws, report.id)
    deliveries.work_once("w1")
    [(_, rcpts, _)] = server.messages
    assert rcpts == ["owner@example.com"]
    store.update(ws, report.id, skip_if_empty=False)
    deliveries.send_now(ws, report.id)
    deliveries.work_once("w1")
    assert len(server.messages) == 2 and [d.status for d in deliveries.history(ws, report.id)] == [
        "sent", "sent", "skipped"]


def test_a_notebook_with_no_rows_is_empty(ws, server):
    use_server(ws, server.port)
    nb = chart_notebook(ws, run=False)
    report = store.create(ws, name="Unrun", source="notebook", notebook_id=nb, rerun_queries=False)
    deliveries.send_now(ws, report.id)
    deliveries.work_once("w1")
    assert one_delivery(ws, report.id).note == "Skipped: No table in the notebook has any rows."


def test_a_notebook_reports_queries_run_again_before_it_is_sent(ws, server):
    use_server(ws, server.port)
    nb = chart_notebook(ws)  # run once, before any spend: no rows stored
    spend(ws)  # then the week happens
    report = store.create(ws, name="Fresh", source="notebook", notebook_id=nb, formats=["csv"])
    assert deliveries.preview(ws, report.id).empty_reason  # the preview shows what is stored and runs nothing
    deliveries.send_now(ws, report.id)
    deliveries.work_once("w1")
    [(_, _, msg)] = server.messages
    [(_, data)] = attachments(msg).values()
    assert pl.read_csv(io.BytesIO(data))["calls"].to_list() == [1, 2]  # the numbers as of the send


def test_smtp_down_fails_retries_and_tells_the_owner_once_it_recovers(ws):
    spend(ws)
    port = free_port()  # nothing listens here yet
    use_server(ws, port)
    report = dashboard_report(ws, formats=["csv"])
    deliveries.send_now(ws, report.id)
    t0 = utcnow()
    deliveries.work_once("w1", now=t0)
    d = one_delivery(ws, report.id)
    assert d.status == "queued" and d.attempts == 1
    assert d.error.startswith(f"Could not send email through 127.0.0.1:{port}:") and "refused" in d.error.lower()
    assert d.outcome.startswith("Retrying (attempt 2)")
    assert deliveries.work_once("w1", now=t0 + timedelta(seconds=10)) == 0  # not before its backoff
    deliveries.work_once("w1", now=t0 + timedelta(seconds=61))
    assert one_delivery(ws, report.id).attempts == 2
    deliveries.work_once("w1", now=t0 + timedelta(seconds=400))
    d = one_delivery(ws, report.id)
    assert (d.status, d.attempts, d.notice) == ("failed", 3, "pending")
    assert d.notice_error and "127.0.0.1" in d.notice_error  # the notice could not go either
    assert "The owner will be told once email works." in d.outcome

    mail = MailServer(port).start()  # the server is back
    try:
        deliveries.work_once("w1", now=t0 + timedelta(seconds=2000))
        [(_, rcpts, msg)] = mail.messages
        assert rcpts == ["owner@example.com"]
        assert msg["Subject"] == "[Meterbook] Report “Weekly spend” could not be sent"
        body = msg.get_body(preferencelist=("plain",)).get_content()
        assert "Could not send email through" in body and "https://meter.example/reports" in body
        d = one_delivery(ws, report.id)
        assert (d.status, d.notice) == ("failed", "sent") and d.notice_sent_at is not None
        assert d.outcome.endswith("The owner was told.")
        deliveries.work_once("w1", now=t0 + timedelta(seconds=9000))
        assert len(mail.messages) == 1  # told once, never again

        deliveries.resend(ws, d.id)  # and a resend now goes through
        deliveries.work_once("w1", now=t0 + timedelta(seconds=9001))
        assert len(mail.messages) == 2 and mail.messages[1][1] == ["owner@example.com", "cfo@example.com"]
        latest = deliveries.history(ws, report.id)[0]
        assert (latest.kind, latest.status, latest.resend_of) == ("resend", "sent", d.id)
    finally:
        mail.stop()


def test_a_refusing_server_records_its_words(ws):
    spend(ws)
    mail = MailServer(refuse="550 5.1.1 Mailbox unavailable").start()
    try:
        use_server(ws, mail.port)
        report = dashboard_report(ws, formats=[])
        deliveries.send_now(ws, report.id)
        deliveries.work_once("w1")
        d = one_delivery(ws, report.id)
        assert d.status == "queued" and "refused every recipient" in d.error and "cfo@example.com" in d.error
        assert mail.messages == []
    finally:
        mail.stop()


def test_a_send_stuck_past_its_lease_times_out_as_failed_and_is_never_sent(ws, server):
    spend(ws)
    use_server(ws, server.port)
    report = dashboard_report(ws, formats=[])
    delivery_id = deliveries.send_now(ws, report.id)
    t0 = utcnow()
    assert deliveries.claim("dead-worker", now=t0) == delivery_id  # a worker takes it, then dies
    assert deliveries.is_unfinished(delivery_id)
    deliveries.work_once("w2", now=t0 + timedelta(seconds=deliveries.LEASE_S - 1))
    assert one_delivery(ws, report.id).status == "sending" and server.messages == []
    deliveries.work_once("w2", now=t0 + timedelta(seconds=deliveries.LEASE_S + 1))
    d = one_delivery(ws, report.id)
    assert (d.status, d.error) == ("failed", deliveries.TIMED_OUT) and not deliveries.is_unfinished(delivery_id)
    [(_, rcpts, msg)] = server.messages  # only the owner's notice; the report itself never went
    assert rcpts == ["owner@example.com"] and "could not be sent" in msg["Subject"]
    assert one_delivery(ws, report.id).notice == "sent"


def test_a_render_that_outlasts_its_lease_does_not_send_what_was_already_failed(ws, server):
    spend(ws)
    use_server(ws, server.port)
    report = dashboard_report(ws, formats=[])
    delivery_id = deliveries.send_now(ws, report.id)
    t0 = utcnow()
    assert deliveries.claim("slow", now=t0) == delivery_id
    assert deliveries.time_out_stuck(now=t0 + timedelta(seconds=deliveries.LEASE_S + 1)) == 1  # another worker's round
    assert deliveries.process(delivery_id, "slow") == "failed"  # the slow worker finishes rendering, and stops there
    assert server.messages == []
    assert one_delivery(ws, report.id).error == deliveries.TIMED_OUT


def test_two_workers_never_send_one_delivery_twice(ws, server):
    spend(ws)
    use_server(ws, server.port)
    report = dashboard_report(ws, formats=[])
    delivery_id = deliveries.send_now(ws, report.id)
    assert deliveries.claim("a") == delivery_id and deliveries.claim("b") is None


def test_enqueue_scheduled_is_idempotent_on_the_fire_time(ws):
    report = dashboard_report(ws, formats=[])
    fire = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    first = deliveries.enqueue_scheduled(report.id, fire)
    assert deliveries.enqueue_scheduled(report.id, fire) == first
    assert deliveries.enqueue_scheduled(report.id, fire.replace(tzinfo=None)) == first  # naive means UTC
    second = deliveries.enqueue_scheduled(report.id, fire + timedelta(hours=1))
    assert second != first
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(ReportDelivery)) == 2
        assert s.get(ReportDelivery, first).as_of == fire
    assert deliveries.is_unfinished(first)
    store.pause(ws, report.id)
    with pytest.raises(Conflict, match="paused"):
        deliveries.enqueue_scheduled(report.id, fire + timedelta(hours=2))
    assert deliveries.enqueue_scheduled(report.id, fire) == first  # a firing already made still answers


def test_a_scheduled_delivery_runs_as_the_owner_for_the_period_before_its_fire_time(ws, server):
    spend(ws)
    use_server(ws, server.port)
    report = dashboard_report(ws, formats=["csv"], view={"period": "today"})
    yesterday = utcnow() - timedelta(days=1, hours=1)
    deliveries.enqueue_scheduled(report.id, yesterday)
    deliveries.work_once("w1")
    d = one_delivery(ws, report.id)
    assert d.status == "skipped"  # "today" as of the fire time was yesterday, which had no calls


def test_send_test_goes_only_to_the_one_who_asked(ws, server):
    spend(ws)
    use_server(ws, server.port)
    editor = member(ws, "ed@example.com", "editor")
    report = dashboard_report(ws, formats=[])
    deliveries.send_test(editor, report.id)
    deliveries.work_once("w1")
    [(_, rcpts, _)] = server.messages
    assert rcpts == ["ed@example.com"]


def test_preview_is_the_message_that_would_be_sent(ws):
    spend(ws)
    report = dashboard_report(ws, formats=["csv", "pdf"])
    p = deliveries.preview(ws, report.id)
    assert p.recipients == ["owner@example.com", "cfo@example.com"] and p.empty_reason is None
    assert 'src="cid:spend-over-time@meterbook.report"' in p.html
    assert "data:image/png;base64," in p.preview_html and "cid:" not in p.preview_html
    kinds = [part.get_content_type() for part in p.message.walk()]
    assert kinds[:5] == ["multipart/mixed", "multipart/alternative", "text/plain", "multipart/related", "text/html"]
    assert "image/png" in kinds and "application/pdf" in kinds
    assert [name.rsplit("-", 1)[-1] for name, _, _ in p.attachments][-1].endswith(".pdf")
    draft = deliveries.preview(ws, draft={"name": "Draft", "source": "dashboard", "view": {"period": "30d"}})
    assert draft.recipients == ["owner@example.com"] and "Last 30 days" in draft.html
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(ReportDelivery)) == 0  # a preview queues nothing


def test_workers_racing_over_the_queue_send_each_delivery_exactly_once(ws, server):
    import threading

    spend(ws)
    use_server(ws, server.port)
    report = dashboard_report(ws, formats=[], recipient_addresses=[], recipient_user_ids=[ws.user_id])
    ids = {deliveries.send_now(ws, report.id) for _ in range(8)}
    start = threading.Barrier(4)
    ran: list[int] = []

    def worker(name: str) -> None:
        start.wait()
        ran.append(deliveries.work_once(name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(ran) == 8
    sent = [int(msg["X-Meterbook-Delivery"]) for _, _, msg in server.messages]
    assert sorted(sent) == sorted(ids)  # every delivery once, none twice
    assert {d.status for d in deliveries.history(ws, report.id)} == {"sent"}

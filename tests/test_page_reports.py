"""The Reports page and the Settings page's Email tab, driven through AppTest against SQLite and a real SMTP server."""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy import func, select

from engine import db
from engine.config import get_settings
from engine.reports import deliveries, smtp_settings, store
from engine.reports.models import Report, WorkspaceSmtp
from tests import pages_helpers
from tests.factories import member, owner
from tests.pages_helpers import errors, no_exceptions
from tests.report_helpers import MailServer, chart_notebook, spend

PAGE = "pages/reports.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Reports")
PREVIEW_TAB = ":material/mail: Preview"
HISTORY_TAB = ":material/history: History"
EMAIL_TAB = ":material/mail: Email"


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("METERBOOK_SMTP_HOST", raising=False)
    get_settings.cache_clear()
    actor = owner()
    spend(actor)
    yield actor
    get_settings.cache_clear()


@pytest.fixture
def server():
    mail = MailServer().start()
    yield mail
    mail.stop()


def reports_stored() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(Report))


def successes(at) -> list[str]:
    return [s.value for s in at.success]


def test_make_a_cost_and_usage_report_preview_it_send_it_and_read_its_history(boss, server):
    smtp_settings.save(boss, host="127.0.0.1", port=server.port, security="none", from_address="r@meter.example")
    at = open_page()
    assert any("No reports yet" in i.value for i in at.info)
    at.button(key="report_new").click().run()
    at.text_input(key="report_new_name").input("Weekly spend")
    at.radio(key="report_new_source").set_value("dashboard").run()
    at.selectbox(key="report_new_period").select("30d")
    at.text_area(key="report_new_addresses").input("cfo@example.com")
    at.checkbox(key="report_new_pdf").check()
    at.button(key="report_save").click().run()
    no_exceptions(at)
    assert successes(at) == ["Saved the report “Weekly spend”."]
    [r] = store.list_reports(boss)
    assert (r.source, r.view, r.formats) == ("dashboard", {"period": "30d"}, ("csv", "pdf"))
    assert r.recipient_emails == ("owner@example.com", "cfo@example.com")
    assert at.query_params["report"] == str(r.id)

    at.session_state["report_tab"] = PREVIEW_TAB
    at.run()
    no_exceptions(at)
    shown = "\n".join(m.value for m in at.markdown)
    assert "**Subject:** Weekly spend · " in shown and "owner@example.com, cfo@example.com" in shown
    [html] = [h.proto.body for h in at.get("html") if "Meterbook report" in h.proto.body]
    assert "data:image/png;base64," in html and "Last 30 days" in html and "cid:" not in html

    at.button(key="report_send_now").click().run()
    assert successes(at)[0].startswith("Queued")
    assert deliveries.work_once("page-test") == 1
    [(_, rcpts, _)] = server.messages
    assert rcpts == ["owner@example.com", "cfo@example.com"]
    at.session_state["report_tab"] = HISTORY_TAB
    at.run()
    table = at.dataframe[0].value
    assert list(table["Status"]) == ["✅ sent"] and list(table["Outcome"]) == ["Sent to 2 recipients."]
    at.button(key="report_resend").click().run()
    no_exceptions(at)
    assert [d.kind for d in deliveries.history(boss, r.id)] == ["resend", "now"]


def test_schedule_as_report_opens_the_editor_with_the_notebook_chosen(boss):
    nb = chart_notebook(boss, run=False)
    at = pages_helpers.open_page("pages/notebooks.py", query={"notebook": str(nb)})
    links = [e for e in at.get("page_link") if e.proto.label == "Schedule as report"]
    assert links and f"notebook={nb}" in links[0].proto.query_string
    at = open_page(query={"notebook": str(nb)})
    assert at.radio(key="report_new_source").value == "notebook"
    assert at.selectbox(key="report_new_notebook").value == nb
    at.text_input(key="report_new_name").input("From the notebook")
    at.button(key="report_save").click().run()
    no_exceptions(at)
    [r] = store.list_reports(boss)
    assert (r.source, r.notebook_id, r.recipient_emails) == ("notebook", nb, ("owner@example.com",))


def test_bad_input_is_explained_and_nothing_is_stored(boss):
    at = open_page()
    at.button(key="report_new").click().run()
    at.radio(key="report_new_source").set_value("dashboard").run()
    at.button(key="report_save").click().run()
    assert errors(at) == ["Report name cannot be empty."]
    at.text_input(key="report_new_name").input("Spend")
    at.text_area(key="report_new_addresses").input("not an address")
    at.button(key="report_save").click().run()
    assert errors(at) == ["The address 'not' is not an email address like ann@example.com."]
    no_exceptions(at)
    assert reports_stored() == 0


def test_pause_resume_and_delete_with_confirmation(boss):
    r = store.create(boss, name="Daily", source="dashboard", view={"period": "today"})
    at = open_page(query={"report": str(r.id)})
    at.button(key="report_pause").click().run()
    assert successes(at) == ["Paused: no scheduled sends until you resume it."] and store.get(boss, r.id).paused
    at.button(key="report_resume").click().run()
    assert not store.get(boss, r.id).paused
    at.button(key="report_delete").click().run()
    assert reports_stored() == 1  # only asked so far
    at.button(key="report_delete_confirm").click().run()
    no_exceptions(at)
    assert successes(at) == ["Deleted the report “Daily”."] and reports_stored() == 0
    assert "report" not in at.query_params


def test_a_viewer_reads_reports_and_their_history_without_controls(boss):
    member(boss, "viewer@example.com", "viewer")
    r = store.create(boss, name="Daily", source="dashboard", view={"period": "today"})
    at = open_page("viewer@example.com")
    assert list(at.dataframe[0].value["Name"]) == ["Daily"]
    with pytest.raises(KeyError):
        at.get_by_key("report_new")
    at = open_page("viewer@example.com", query={"report": str(r.id)})
    assert any("Only editors and up can change or send reports" in i.value for i in at.info)
    for key in ("report_send_now", "report_save", "report_delete"):
        with pytest.raises(KeyError):
            at.get_by_key(key)


# --- Settings → Email ---------------------------------------------------------------------


open_email_tab = partial(pages_helpers.open_page, "pages/settings.py", state={"settings_tab": EMAIL_TAB})


def test_smtp_settings_save_mask_the_password_and_send_a_test(boss, server):
    at = open_email_tab()
    assert any("No mail server is set up" in c.value for c in at.caption)
    at.text_input(key="smtp_host").input("127.0.0.1")
    at.text_input(key="smtp_port").input(str(server.port))
    at.selectbox(key="smtp_security").select("none")
    at.text_input(key="smtp_user").input("")
    at.text_input(key="smtp_password").input("relay-password-1234")
    at.text_input(key="smtp_from").input("reports@meter.example")
    at.button(key="smtp_save").click().run()
    no_exceptions(at)
    assert successes(at) == ["Mail server saved. Send a test email to check it."]
    assert smtp_settings.get(boss).password_hint == "rel…1234"
    assert at.text_input(key="smtp_password").value == ""  # write-only: never put back in the page
    assert at.text_input(key="smtp_password").placeholder == "stored: rel…1234"
    with db.read_session() as s:
        row = s.scalar(select(WorkspaceSmtp))
        assert b"relay-password-1234" not in row.password_ciphertext
    assert smtp_settings.config_for(boss.workspace_id).password == "relay-password-1234"

    at.button(key="smtp_test").click().run()
    no_exceptions(at)
    assert successes(at) == ["Sent a test email to owner@example.com."]
    [(sender, rcpts, msg)] = server.messages
    assert (sender, rcpts, msg["Subject"]) == ("reports@meter.example", ["owner@example.com"], "Meterbook test email")


def test_a_bad_port_is_refused_and_a_failing_test_says_why(boss):
    smtp_settings.save(boss, host="127.0.0.1", port=1, security="none", from_address="r@meter.example")
    at = open_email_tab()
    at.text_input(key="smtp_port").input("99999")
    at.button(key="smtp_save").click().run()
    assert errors(at) == ["The port is a whole number from 1 to 65535, not 99999."]
    assert smtp_settings.get(boss).port == 1
    at.button(key="smtp_test").click().run()
    no_exceptions(at)
    [message] = errors(at)
    assert message.startswith("Could not send email through 127.0.0.1:1:")
    assert smtp_settings.get(boss).last_test_ok is False


def test_an_editor_sees_the_mail_server_but_cannot_change_it(boss):
    member(boss, "ed@example.com", "editor")
    smtp_settings.save(boss, host="mail.example.com", port=587, from_address="r@meter.example", password="x" * 16)
    at = open_email_tab("ed@example.com")
    assert any("mail.example.com:587" in c.value for c in at.caption)
    assert any("Only admins and owners can change the mail server" in i.value for i in at.info)
    with pytest.raises(KeyError):
        at.get_by_key("smtp_host")


def test_the_page_says_when_nothing_would_go_out(boss):
    store.create(boss, name="Weekly", source="dashboard", cron="0 9 * * 1", timezone="UTC")
    at = open_page()
    warnings = [w.value for w in at.warning]
    assert "No mail server is set up, so reports cannot be emailed yet." in warnings
    assert any(w.startswith("No sidecar is firing schedules right now") for w in warnings)
    assert list(at.dataframe[0].value["Schedule"]) == ["0 9 * * 1 (UTC)"]
    assert list(at.dataframe[0].value["Next send"]) != ["—"]  # the next Monday, as the schedule says
    smtp_settings.save(boss, host="mail.example.com", port=587, from_address="r@meter.example")
    at.run()
    assert not any("mail server" in w.value for w in at.warning)

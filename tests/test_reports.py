"""Reports as stored: who may make, change, send and read them; bad input refused with nothing changed; the plan.

Also the workspace's mail server: the password in the vault (masked, write-only), STARTTLS with
a sign-in against a real aiosmtpd, the environment's server as the fallback. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from engine import accounts, db, notebooks
from engine.billing.limits import PlanLimitReached
from engine.config import get_settings
from engine.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from engine.notify import DeliveryFailed
from engine.reports import deliveries, smtp_settings, store
from engine.permissions import Actor
from engine.reports.models import Report, ReportDelivery, WorkspaceSmtp
from tests.billing_helpers import billing_on
from tests.factories import member, owner
from tests.report_helpers import chart_notebook, spend
from tests.test_notify import PASSWORD as SMTP_PASSWORD
from tests.test_notify import USER as SMTP_USER
from tests.test_notify import certificates, mail_server, trust_test_ca  # noqa: F401  (fixtures)


@pytest.fixture
def ws(database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    for name in ("HOST", "USERNAME", "PASSWORD"):
        monkeypatch.delenv(f"METERBOOK_SMTP_{name}", raising=False)
    get_settings.cache_clear()
    yield owner()
    get_settings.cache_clear()


def elsewhere(email: str) -> Actor:
    """Someone who owns another workspace (and is no member of this one)."""
    user = accounts.create_user(email, email.split("@")[0].title(), "correct horse battery")
    return Actor(user.id, accounts.create_workspace(user.id, "Other Co").id)


def stored() -> list[tuple]:
    """Everything about reports that is stored, to compare before and after a refusal."""
    with db.read_session() as s:
        reports = [(r.id, r.name, r.source, r.notebook_id, r.view, r.formats, r.recipient_user_ids,
                    r.recipient_addresses, r.skip_if_empty, r.paused) for r in s.scalars(select(Report))]
        sends = [(d.id, d.status) for d in s.scalars(select(ReportDelivery))]
        smtp = [(m.host, m.port, m.security, m.password_hint) for m in s.scalars(select(WorkspaceSmtp))]
    return [reports, sends, smtp]


def weekly(actor, **fields):
    return store.create(actor, **{"name": "Weekly", "source": "dashboard", "view": {"period": "7d"}, **fields})


def test_create_update_list_and_delete(ws):
    r = weekly(ws, formats=["pdf", "csv"], recipient_addresses="a@example.com; b@example.com\nA@example.com")
    assert r.formats == ("csv", "pdf") and r.recipient_addresses == ("a@example.com", "b@example.com")
    assert r.recipient_user_ids == () and r.owner_name == "Olivia Owner" and r.skip_if_empty and not r.paused
    mine = weekly(ws, name="Mine")
    assert mine.recipient_user_ids == (ws.user_id,)  # nobody named: the owner
    nb = chart_notebook(ws, run=False)
    changed = store.update(ws, r.id, source="notebook", notebook_id=nb, skip_if_empty=False, name=" Weekly notes ")
    assert (changed.source, changed.notebook_id, changed.notebook_title, changed.name) == (
        "notebook", nb, "Spend review", "Weekly notes")
    assert changed.source_label == "Notebook: Spend review"
    assert [x.name for x in store.list_reports(ws)] == ["Mine", "Weekly notes"]
    assert store.delete(ws, r.id) == "Weekly notes"
    assert [x.name for x in store.list_reports(ws)] == ["Mine"]
    with pytest.raises(NotFound):
        store.get(ws, r.id)
    with pytest.raises(Conflict, match="already a report called 'Mine'"):
        weekly(ws, name="Mine")


def test_a_deleted_notebook_fails_the_send_with_what_to_do(ws):
    nb = chart_notebook(ws, run=False)
    r = store.create(ws, name="Notes", source="notebook", notebook_id=nb)
    notebooks.delete_notebook(ws, nb)
    assert store.get(ws, r.id).notebook_id is None
    deliveries.send_now(ws, r.id)
    deliveries.work_once("w")
    [d] = deliveries.history(ws, r.id)
    assert d.status == "failed" and d.attempts == 1  # not retried: nothing a retry would change
    assert d.error == "The notebook this report sends was deleted. Pick another notebook for it."


def test_bad_input_is_refused_and_nothing_changes(ws):
    r = weekly(ws)
    other = elsewhere("other@example.com")
    private = notebooks.create_notebook(other, "Theirs").id
    editor = member(ws, "ed@example.com", "editor")
    hidden = notebooks.create_notebook(editor, "Private to the editor").id
    before = stored()
    cases = [
        (lambda: store.update(ws, r.id, recipient_addresses=["ok@example.com", "bad address"]), InvalidInput,
         "not an email address"),
        (lambda: store.update(ws, r.id, recipient_addresses=["x@example.com\r\nBcc: evil@example.com"]), InvalidInput,
         "not an email address"),
        (lambda: store.update(ws, r.id, recipient_user_ids=[other.user_id]), InvalidInput, "not a member"),
        (lambda: store.update(ws, r.id, recipient_user_ids=[], recipient_addresses=[]), InvalidInput,
         "at least one recipient"),
        (lambda: store.update(ws, r.id, source="notebook", notebook_id=999_999), NotFound, "notebook does not exist"),
        (lambda: store.update(ws, r.id, source="notebook", notebook_id=private), NotFound, "notebook does not exist"),
        (lambda: store.update(ws, r.id, source="notebook", notebook_id=hidden), NotFound, "notebook does not exist"),
        (lambda: store.update(ws, r.id, view={"period": "custom"}), InvalidInput, "first and a last day"),
        (lambda: store.update(ws, r.id, view={"period": "fortnight"}), InvalidInput, "Unknown period"),
        (lambda: store.update(ws, r.id, view={"colour": "red"}), InvalidInput, "no field 'colour'"),
        (lambda: store.update(ws, r.id, formats=["docx"]), InvalidInput, "'docx' is not one of them"),
        (lambda: store.update(ws, r.id, name="   "), InvalidInput, "cannot be empty"),
        (lambda: store.update(ws, r.id, name="Weekly\r\nBcc: evil@example.com"), InvalidInput, "one line"),
        (lambda: store.update(ws, r.id, owner_id=5), InvalidInput, "no field 'owner_id'"),
        (lambda: weekly(ws, name="New", source="pdf"), InvalidInput, "notebook or a Cost & Usage view"),
        (lambda: store.create(ws, name="Nb", source="notebook"), InvalidInput, "Pick the notebook"),
        (lambda: smtp_settings.save(ws, host="127.0.0.1", port="99999", from_address="r@x.example"), InvalidInput,
         "1 to 65535"),
        (lambda: smtp_settings.save(ws, host="127.0.0.1", port="smtp", from_address="r@x.example"), InvalidInput,
         "1 to 65535"),
        (lambda: smtp_settings.save(ws, host="smtp://mail", port=25, from_address="r@x.example"), InvalidInput,
         "host name"),
        (lambda: smtp_settings.save(ws, host="mail", port=25, security="ssl3", from_address="r@x.example"),
         InvalidInput, "STARTTLS, TLS"),
        (lambda: smtp_settings.save(ws, host="mail", port=25, from_address="nobody"), InvalidInput, "sender address"),
        (lambda: deliveries.resend(ws, 424242), NotFound, "delivery does not exist"),
    ]
    for call, error, words in cases:
        with pytest.raises(error, match=words):
            call()
        assert stored() == before, words


def test_who_may_do_what(ws):
    viewer = member(ws, "viewer@example.com", "viewer")
    editor = member(ws, "editor@example.com", "editor")
    r = weekly(ws)
    before = stored()
    for call in (lambda: weekly(viewer, name="V"), lambda: store.update(viewer, r.id, name="V"),
                 lambda: store.pause(viewer, r.id), lambda: store.delete(viewer, r.id),
                 lambda: deliveries.send_now(viewer, r.id), lambda: deliveries.send_test(viewer, r.id),
                 lambda: smtp_settings.save(editor, host="mail", port=25, from_address="r@x.example"),
                 lambda: smtp_settings.send_test(editor)):
        with pytest.raises(PermissionDenied):
            call()
    assert stored() == before
    assert [x.name for x in store.list_reports(viewer)] == ["Weekly"]  # reading is for every member
    assert deliveries.history(viewer, r.id) == [] and deliveries.preview(viewer, r.id).recipients
    store.update(editor, r.id, name="Edited")  # editors change reports
    deliveries.send_now(editor, r.id)

    stranger = elsewhere("stranger@example.com")
    for call in (lambda: store.get(stranger, r.id), lambda: store.update(stranger, r.id, name="X"),
                 lambda: store.delete(stranger, r.id), lambda: deliveries.send_now(stranger, r.id),
                 lambda: deliveries.history(stranger, r.id), lambda: deliveries.preview(stranger, r.id)):
        with pytest.raises(NotFound):
            call()


def test_a_private_notebook_is_not_previewed_by_someone_who_cannot_read_it(ws):
    editor = member(ws, "editor@example.com", "editor")
    nb = chart_notebook(editor, run=False, shared=False)
    r = store.create(editor, name="Mine", source="notebook", notebook_id=nb)
    with pytest.raises(NotFound, match="notebook does not exist"):
        deliveries.preview(ws, r.id)
    assert deliveries.preview(editor, r.id).recipients == ["editor@example.com"]


def test_a_plan_without_reports_refuses_them(ws, monkeypatch):
    r = weekly(ws)
    with billing_on(monkeypatch):  # billing on, no subscription: the Free plan, which has no reports
        before = stored()
        for call in (lambda: weekly(ws, name="More"), lambda: deliveries.send_now(ws, r.id),
                     lambda: deliveries.enqueue_scheduled(r.id, deliveries.utcnow())):
            with pytest.raises(PlanLimitReached, match="does not include scheduled reports"):
                call()
        assert stored() == before


# --- the workspace's mail server ----------------------------------------------------------


def test_the_password_is_in_the_vault_masked_and_write_only(ws):
    smtp_settings.save(ws, host="mail.example.com", port=587, username="reports", password="s3cret-smtp-password",
                       from_address="reports@example.com")
    view = smtp_settings.get(ws)
    assert view.password_hint == "s3c…word" and "s3cret" not in repr(view)
    with db.read_session() as s:
        row = s.scalar(select(WorkspaceSmtp))
        assert b"s3cret-smtp-password" not in row.password_ciphertext
    config = smtp_settings.config_for(ws.workspace_id)
    assert config.password == "s3cret-smtp-password" and "s3cret" not in repr(config)
    smtp_settings.save(ws, host="mail2.example.com", port=465, security="tls", username="reports",
                       from_address="reports@example.com")  # the password is kept when none is given
    assert smtp_settings.config_for(ws.workspace_id).password == "s3cret-smtp-password"
    smtp_settings.save(ws, host="mail2.example.com", port=465, security="tls", password=None,
                       from_address="reports@example.com")
    assert smtp_settings.get(ws).password_hint is None and smtp_settings.config_for(ws.workspace_id).password is None


def test_without_a_workspace_server_the_environment_is_used_and_without_either_it_says_so(ws, monkeypatch):
    with pytest.raises(DeliveryFailed, match="Settings → Email"):
        smtp_settings.config_for(ws.workspace_id)
    monkeypatch.setenv("METERBOOK_SMTP_HOST", "env-mail.example")
    get_settings.cache_clear()
    config = smtp_settings.config_for(ws.workspace_id)
    assert (config.host, config.source) == ("env-mail.example", "environment")
    smtp_settings.save(ws, host="own-mail.example", port=25, security="none", from_address="r@x.example")
    assert smtp_settings.config_for(ws.workspace_id).host == "own-mail.example"
    smtp_settings.clear(ws)
    assert smtp_settings.config_for(ws.workspace_id).host == "env-mail.example"


def test_a_report_goes_over_starttls_signed_in_with_the_vaulted_password(ws, mail_server, trust_test_ca):
    port, inbox = mail_server
    spend(ws)
    smtp_settings.save(ws, host="127.0.0.1", port=port, security="starttls", username=SMTP_USER,
                       password="a-wrong-password", from_address="reports@meter.example")
    r = weekly(ws, formats=["csv"])
    deliveries.send_now(ws, r.id)
    deliveries.work_once("w")
    [d] = deliveries.history(ws, r.id)
    assert d.status == "queued" and "refused the user name or password (535)" in d.error and inbox.messages == []
    with pytest.raises(DeliveryFailed, match="refused the user name or password"):
        smtp_settings.send_test(ws)
    assert smtp_settings.get(ws).last_test_ok is False

    smtp_settings.save(ws, host="127.0.0.1", port=port, security="starttls", username=SMTP_USER,
                       password=SMTP_PASSWORD, from_address="reports@meter.example")
    assert smtp_settings.send_test(ws) == "owner@example.com"
    assert smtp_settings.get(ws).last_test_ok is True
    deliveries.work_once("w", now=deliveries.utcnow() + deliveries.timedelta(minutes=2))
    assert deliveries.history(ws, r.id)[0].status == "sent"
    assert all(tls and login == SMTP_USER for *_, tls, login in inbox.messages)
    [(_, rcpts, text, _, _)] = [m for m in inbox.messages if "Subject: Weekly" in m[2]]
    assert rcpts == ["owner@example.com"] and "Content-Type: text/csv" in text

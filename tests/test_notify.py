"""Email and webhooks through real clients against local servers, and alerts going out grouped per recipient.

SMTP is aiosmtpd on 127.0.0.1 with STARTTLS (a certificate from a throwaway CA that the
test makes the client trust through ``SSL_CERT_FILE``) and AUTH; webhooks land on the
test suite's small HTTP server.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from decimal import Decimal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine import alerts, budgets, db, monitor, notify, usage
from engine.config import Settings, get_settings
from tests.factories import member, owner
from tests.fakes.wire import WireServer

USER, PASSWORD = "meterbook", "smtp-secret-pass"


# --- a certificate authority and a mail server ------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Test CA")).issuer_name(_name("Test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return folder


class Inbox:
    """What the server accepted: (sender, recipients, message text, came over TLS, signed-in user)."""

    def __init__(self):
        self.messages: list[tuple[str, list[str], str, bool, str | None]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode(),
                              session.ssl is not None, login))
        self.arrived.set()
        return "250 Message accepted"


def _authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mail_server(certificates):
    """SMTP on 127.0.0.1 that requires STARTTLS and then AUTH."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port(), tls_context=tls, require_starttls=True,
                            auth_required=True, authenticator=_authenticate)
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture
def plain_mail_server():
    """SMTP on 127.0.0.1 with neither TLS nor AUTH, like a relay on a private network."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture
def trust_test_ca(certificates, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))


def smtp(port: int, **overrides) -> Settings:
    return Settings(**{"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_username": USER, "smtp_password": PASSWORD,
                       "smtp_from": "alerts@meterbook.example", **overrides})


# --- email ----------------------------------------------------------------------------------


def test_email_goes_over_starttls_and_signs_in(mail_server, trust_test_ca):
    port, inbox = mail_server
    notify.send_email(["ann@example.com", "bob@example.com"], "Budget alert", "80% used.", settings=smtp(port))
    [(sender, recipients, text, tls, login)] = inbox.messages
    assert (sender, recipients, tls, login) == ("alerts@meterbook.example", ["ann@example.com", "bob@example.com"],
                                                True, USER)
    assert "Subject: Budget alert" in text and "80% used." in text


def test_a_wrong_password_or_an_untrusted_certificate_is_explained(mail_server, trust_test_ca, monkeypatch):
    port, inbox = mail_server
    with pytest.raises(notify.DeliveryFailed, match=r"127\.0\.0\.1:\d+ refused the user name or password"):
        notify.send_email(["ann@example.com"], "x", "y", settings=smtp(port, smtp_password="wrong"))
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")  # nothing vouches for the server now
    with pytest.raises(notify.DeliveryFailed, match="Could not start TLS"):
        notify.send_email(["ann@example.com"], "x", "y", settings=smtp(port))
    assert inbox.messages == []


def test_starttls_is_required_unless_turned_off(plain_mail_server):
    port, inbox = plain_mail_server
    with pytest.raises(notify.DeliveryFailed, match="does not offer STARTTLS"):
        notify.send_email(["ann@example.com"], "x", "y", settings=smtp(port, smtp_username=None))
    notify.send_email(["ann@example.com"], "Plain", "On a trusted network.",
                      settings=smtp(port, smtp_username=None, smtp_starttls=False))
    [(_, _, text, tls, login)] = inbox.messages
    assert "On a trusted network." in text and not tls and login is None


def test_email_without_a_server_set_up_says_how_to_set_it_up():
    with pytest.raises(notify.DeliveryFailed, match="METERBOOK_SMTP_HOST"):
        notify.send_email(["ann@example.com"], "x", "y", settings=Settings(smtp_host=None))


# --- webhooks -------------------------------------------------------------------------------


@pytest.fixture
def hook_server():
    status = {"code": 200}

    def route(received, exchange):
        exchange.json(status["code"], {"ok": status["code"] < 300})

    with WireServer(route) as server:
        yield server, status


def test_a_webhook_posts_slack_compatible_json_and_a_failure_names_only_the_host(hook_server):
    server, status = hook_server
    url = f"{server.origin}/services/T000/B000/very-secret-token"
    notify.post_webhook(url, "Budget “Ads” is at 80%.", extra={"alerts": [{"kind": "threshold"}]})
    [got] = server.received
    assert (got.method, got.path, got.header("content-type")) == ("POST", "/services/T000/B000/very-secret-token",
                                                                  "application/json")
    assert got.body == {"text": "Budget “Ads” is at 80%.", "alerts": [{"kind": "threshold"}]}
    status["code"] = 500
    with pytest.raises(notify.DeliveryFailed) as failed:
        notify.post_webhook(url, "again")
    assert "127.0.0.1 answered 500" in str(failed.value) and "very-secret-token" not in str(failed.value)
    with pytest.raises(notify.DeliveryFailed, match="Could not reach the webhook at 127.0.0.1"):
        notify.post_webhook(f"http://127.0.0.1:{_free_port()}/hook", "nobody listens")


# --- alerts going out -----------------------------------------------------------------------


@pytest.fixture
def alerting(database, tmp_path, monkeypatch, mail_server, trust_test_ca, hook_server):
    """A workspace whose email goes to the local server, with its runs after commit recorded, not started."""
    port, inbox = mail_server
    for name, value in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_USERNAME": USER,
                        "SMTP_PASSWORD": PASSWORD, "SMTP_FROM": "alerts@meterbook.example",
                        "SECRET_KEY_FILE": str(tmp_path / "secret.key"), "BASE_URL": "https://meter.example"}.items():
        monkeypatch.setenv(f"METERBOOK_{name}", value)
    monkeypatch.delenv("METERBOOK_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    runs = []
    monkeypatch.setattr(monitor, "schedule", lambda *args: runs.append(args))
    boss = owner()
    yield boss, inbox, hook_server, runs
    get_settings.cache_clear()


def spend(actor, amount: str) -> None:
    with db.transaction() as s:
        usage.record(s, workspace_id=actor.workspace_id, provider="openai", model="gpt-4o-mini", cost=Decimal(amount))


def test_alerts_that_fire_together_go_out_as_one_message_per_recipient(alerting):
    boss, inbox, (server, _), runs = alerting
    analyst = member(boss, "analyst@example.com", "editor")
    spend(boss, "9.50")
    b = budgets.create_budget(boss, name="Ads", scope="workspace", period="monthly", limit_usd="10",
                              thresholds="25, 50, 75, 90", owner_ids=[boss.user_id, analyst.user_id],
                              webhook_url=f"{server.origin}/services/T0/B0/secret")
    assert runs == [(boss.workspace_id, (b.id,), True)]  # asked for after commit, not sent inside it
    assert inbox.messages == [] and server.received == []

    assert alerts.deliver_pending(boss.workspace_id) == 4
    assert sorted(r for _, rcpts, *_ in inbox.messages for r in rcpts) == ["analyst@example.com",
                                                                           "owner@example.com"]
    for _, _, text, tls, _ in inbox.messages:
        assert "Subject: [Meterbook] 4 alerts in Acme Analytics" in text and tls
        assert "Ads: 90% of the budget used" in text and "https://meter.example/budgets" in text
    [post] = server.received
    assert post.body["text"].startswith("4 alerts fired together in Acme Analytics")
    assert [a["title"] for a in post.body["alerts"]] == [f"Ads: {p}% of the budget used" for p in (25, 50, 75, 90)]
    assert {a.delivery for a in alerts.list_alerts(boss)} == {"sent"}
    assert alerts.deliver_pending(boss.workspace_id) == 0  # each alert goes out once
    assert len(inbox.messages) == 2 and len(server.received) == 1


def test_how_each_alert_went_out_is_recorded(alerting, monkeypatch):
    boss, inbox, (server, status), _ = alerting
    spend(boss, "6")
    budgets.create_budget(boss, name="Hooked", scope="workspace", period="monthly", limit_usd="10",
                          webhook_url=f"{server.origin}/hook")
    status["code"] = 404
    alerts.deliver_pending(boss.workspace_id)
    [alert] = alerts.list_alerts(boss)
    assert alert.delivery == "partial"  # the email went, the webhook did not
    assert "127.0.0.1 answered 404" in alert.delivery_error and len(inbox.messages) == 1

    monkeypatch.setenv("METERBOOK_SMTP_HOST", "")
    get_settings.cache_clear()
    budgets.create_budget(boss, name="Quiet", scope="workspace", period="monthly", limit_usd="8", thresholds="50")
    alerts.deliver_pending(boss.workspace_id)
    quiet = next(a for a in alerts.list_alerts(boss) if a.title.startswith("Quiet"))
    assert (quiet.delivery, quiet.delivery_error) == ("in_app", None)  # no email set up, no webhook: in the app only


def test_the_background_runner_sends_after_commit(alerting, monkeypatch):
    boss, inbox, (server, _), _ = alerting
    runner = monitor.BackgroundRunner(delay_s=0.05)
    monkeypatch.setattr(monitor, "schedule", runner)
    spend(boss, "5")
    budgets.create_budget(boss, name="Live", scope="workspace", period="monthly", limit_usd="9",
                          webhook_url=f"{server.origin}/hook")
    assert inbox.arrived.wait(timeout=30), "the alert was never emailed"
    for _ in range(300):  # the run records the outcome just after sending
        if alerts.list_alerts(boss)[0].delivery == "sent":
            break
        threading.Event().wait(0.1)
    assert alerts.list_alerts(boss)[0].delivery == "sent" and len(server.received) == 1

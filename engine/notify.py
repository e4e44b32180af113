"""Sending messages out: email over SMTP and JSON webhooks (Slack-compatible ``{"text": ...}``).

Email goes through the server in the ``METERBOOK_SMTP_*`` settings, upgraded with STARTTLS
(certificate checked against the system's trust store) unless ``smtp_starttls`` is off, and
signed in when a user name is set. A webhook is a POST of ``{"text": ...}`` plus any extra
fields, which Slack, Mattermost, Discord's Slack-compatible endpoint and plain receivers all
accept. Both raise ``DeliveryFailed`` with a message fit to show and store: it names the
server or the webhook's host, never the webhook's full address (that is its secret).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine.config import Settings, get_settings
from engine.errors import InvalidInput, MeterbookError

TIMEOUT_S = 15.0


class DeliveryFailed(MeterbookError):
    """A message could not be handed over; the text says to whom and why."""


def email_configured(settings: Settings | None = None) -> bool:
    return bool((settings or get_settings()).smtp_host)


def send_email(to: Sequence[str], subject: str, text: str, *, settings: Settings | None = None) -> None:
    """Send one plain-text email to ``to`` (one message, every recipient in To)."""
    s = settings or get_settings()
    if not s.smtp_host:
        raise DeliveryFailed("Email is not set up: set METERBOOK_SMTP_HOST (and the other METERBOOK_SMTP_* "
                             "settings) to send email.")
    if not to:
        raise DeliveryFailed("The email has no recipients.")
    msg = EmailMessage()
    msg["From"] = s.smtp_from
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=s.smtp_from.rpartition("@")[2] or "meterbook.local")
    msg.set_content(text)
    where = f"{s.smtp_host}:{s.smtp_port}"
    try:
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=TIMEOUT_S) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password.get_secret_value() if s.smtp_password else "")
            refused = smtp.send_message(msg)
    except smtplib.SMTPNotSupportedError:
        raise DeliveryFailed(f"The mail server {where} does not offer STARTTLS; turn METERBOOK_SMTP_STARTTLS "
                             "off only if the server is on a trusted network.") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryFailed(f"The mail server {where} refused the user name or password ({exc.smtp_code}).") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryFailed(f"The mail server {where} refused every recipient: {', '.join(exc.recipients)}.") from None
    except ssl.SSLError as exc:
        raise DeliveryFailed(f"Could not start TLS with the mail server {where}: {exc.reason or exc}.") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"Could not send email through {where}: {exc}.") from None
    if refused:
        raise DeliveryFailed(f"The mail server {where} refused {', '.join(sorted(refused))}.")


def check_webhook_url(url: str) -> str:
    """A webhook address worth storing: absolute http(s) with a host."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidInput("A webhook address starts with https:// (or http:// on a private network), like "
                           "https://hooks.slack.com/services/….")
    return url


def webhook_hint(url: str) -> str:
    """What may be shown of a webhook address: its host and the last four characters."""
    parts = urlsplit(url)
    return f"{parts.hostname}/…{url[-4:]}" if len(url) > 12 else f"{parts.hostname}/…"


def post_webhook(url: str, text: str, *, extra: Mapping[str, Any] | None = None) -> None:
    """POST ``{"text": text, **extra}`` as JSON; any answer but 2xx is a failure."""
    host = urlsplit(url).hostname or "the webhook"
    payload = {"text": text, **(extra or {})}
    try:
        response = httpx.post(url, json=payload, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"Could not reach the webhook at {host}: {type(exc).__name__}.") from None
    if not response.is_success:
        raise DeliveryFailed(f"The webhook at {host} answered {response.status_code}: {response.text[:200]}")

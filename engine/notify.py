"""Sending messages out: email over SMTP and JSON webhooks (Slack-compatible ``{"text": ...}``).

Email goes through the server in the ``METERBOOK_SMTP_*`` settings (``engine.smtp`` is the client),
upgraded with STARTTLS (certificate checked against the system's trust store) unless
``smtp_starttls`` is off, and signed in when a user name is set. A webhook is a POST of ``{"text": ...}`` plus any extra
fields, which Slack, Mattermost, Discord's Slack-compatible endpoint and plain receivers all
accept. Both raise ``DeliveryFailed`` with a message fit to show and store: it names the
server or the webhook's host, never the webhook's full address (that is its secret).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine import smtp
from engine.config import Settings
from engine.errors import InvalidInput
from engine.smtp import TIMEOUT_S, DeliveryFailed

__all__ = ["DeliveryFailed", "email_configured", "send_email", "check_webhook_url", "webhook_hint", "post_webhook"]

def email_configured(settings: Settings | None = None) -> bool:
    return smtp.from_settings(settings) is not None


def send_email(to: Sequence[str], subject: str, text: str, *, settings: Settings | None = None) -> None:
    """Send one plain-text email to ``to`` (one message, every recipient in To)."""
    config = smtp.from_settings(settings)
    if config is None:
        raise DeliveryFailed("Email is not set up: set METERBOOK_SMTP_HOST (and the other METERBOOK_SMTP_* "
                             "settings) to send email.")
    if not to:
        raise DeliveryFailed("The email has no recipients.")
    smtp.send(config, smtp.plain_message(config, list(to), subject, text), list(to))


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
